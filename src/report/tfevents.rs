//! TensorBoard event files (`events.out.tfevents.*`) with scalar summaries, so `tensorboard
//! --logdir` shows a run's curves. The format is TFRecord framing around `Event` protocol buffers;
//! only the fields scalars need are encoded (wall_time, step, file_version, summary.value{tag,
//! simple_value}).
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends scalar events to one event file.
pub struct EventWriter {
    file: std::fs::File,
    pub path: PathBuf,
}

impl EventWriter {
    /// Creates `events.out.tfevents.<time>.ccma` in `dir` and writes the file-version header event.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        let now = wall_time();
        let path = dir.join(format!("events.out.tfevents.{}.ccma", now as u64));
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = EventWriter { file, path };
        let mut ev = Vec::new();
        put_double(&mut ev, 1, now);
        put_bytes(&mut ev, 3, b"brain.Event:2");
        w.record(&ev)?;
        Ok(w)
    }

    /// Writes one scalar `value` under `tag` at `step`.
    pub fn scalar(&mut self, tag: &str, value: f32, step: i64) -> Result<()> {
        let mut val = Vec::new();
        put_bytes(&mut val, 1, tag.as_bytes());
        val.push(0x15); // field 2 (simple_value), 32-bit
        val.extend_from_slice(&value.to_le_bytes());
        let mut summary = Vec::new();
        put_bytes(&mut summary, 1, &val);
        let mut ev = Vec::new();
        put_double(&mut ev, 1, wall_time());
        put_varint(&mut ev, 2 << 3, step as u64);
        put_bytes(&mut ev, 5, &summary);
        self.record(&ev)
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut buf = Vec::with_capacity(data.len() + 16);
        buf.extend_from_slice(&len);
        buf.extend_from_slice(&masked_crc(&len).to_le_bytes());
        buf.extend_from_slice(data);
        buf.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.file
            .write_all(&buf)
            .and_then(|_| self.file.flush())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn varint(buf: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        buf.push((x as u8 & 0x7f) | 0x80);
        x >>= 7;
    }
    buf.push(x as u8);
}

/// A varint field: its key (`field << 3`, wire type 0) then the value.
fn put_varint(buf: &mut Vec<u8>, key: u64, v: u64) {
    varint(buf, key);
    varint(buf, v);
}

fn put_double(buf: &mut Vec<u8>, field: u64, v: f64) {
    buf.push(((field << 3) | 1) as u8);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(buf, (field << 3) | 2);
    varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// CRC-32C (Castagnoli), bitwise.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// TFRecord's masked CRC.
fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }
}
