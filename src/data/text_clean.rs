//! Caption cleaning exactly as CLIP's and IRRA's tokenizers do it before BPE:
//! `ftfy.fix_text(text)` (ftfy 6.3, default configuration), `html.unescape` twice, `strip()`,
//! whitespace runs collapsed to one space, `lower()`.
//!
//! `ftfy.fix_text` is reproduced step by step: HTML entities (only in lines without `<`),
//! mojibake repair (text that was UTF-8 decoded as a single-byte code page, detected by ftfy's
//! badness heuristic), C1 controls, Latin ligatures, full-/half-width forms, curly quotes, line
//! breaks, terminal escapes, control characters and NFC, repeated until nothing changes. The
//! character tables come from Python and ftfy (`text_tables.rs`, generated). Character
//! properties (letters, digits, case mapping, NFC) come from Rust's Unicode tables, which can
//! differ from a given Python's only for characters assigned in recent Unicode versions.
use super::text_tables as tables;
use regex::bytes::Regex as BytesRegex;
use regex::Regex;
use std::collections::HashMap;
use std::sync::OnceLock;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// The full cleaning chain applied to a caption before pre-tokenisation.
pub fn clean_caption(text: &str) -> String {
    let unescaped;
    let text = if needs_fixing(text) {
        let fixed = fix_text(text);
        unescaped = html_unescape(&html_unescape(&fixed));
        unescaped.as_str()
    } else {
        text
    };
    let mut out = String::with_capacity(text.len());
    // `re.sub(r'\s+', ' ', text).strip()` (the `regex` module's \s is White_Space), after
    // `str.strip()`, whose whitespace also includes U+001C..U+001F.
    for word in text.trim_matches(is_py_space).split(char::is_whitespace) {
        if !word.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(word);
        }
    }
    let trimmed = out.trim_matches(is_py_space);
    if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        trimmed.to_lowercase()
    }
}

/// False when `fix_text` and `html.unescape` provably leave `text` unchanged (plain printable
/// ASCII without `&`; tabs and line breaks only matter as whitespace afterwards).
fn needs_fixing(text: &str) -> bool {
    !text
        .bytes()
        .all(|b| matches!(b, b'\t' | b'\n' | b'\r' | 0x20..=0x7E) && b != b'&')
}

/// Python's `str.isspace()`.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `html.unescape`: HTML5 named and numeric character references, including the
/// HTML5 rules for references without `;`, invalid code points and the longest-prefix match.
pub fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    static CHARREF: OnceLock<Regex> = OnceLock::new();
    let re = CHARREF.get_or_init(|| {
        Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\x0C <&#;]{1,32};?)")
            .expect("valid charref regex")
    });
    re.replace_all(text, |c: &regex::Captures| replace_charref(&c[1]))
        .into_owned()
}

fn html5_entity(name: &str) -> Option<&'static str> {
    tables::HTML5_ENTITIES
        .binary_search_by(|(k, _)| k.as_bytes().cmp(name.as_bytes()))
        .ok()
        .map(|i| tables::HTML5_ENTITIES[i].1)
}

fn replace_charref(s: &str) -> String {
    if let Some(num) = s.strip_prefix('#') {
        let num = num.trim_end_matches(';');
        let value = match num.strip_prefix(['x', 'X']) {
            Some(hex) => parse_saturating(hex, 16),
            None => parse_saturating(num, 10),
        };
        return numeric_charref(value);
    }
    if let Some(v) = html5_entity(s) {
        return v.to_string();
    }
    let cuts: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
    // Prefixes of x characters, x = len-1 down to 2.
    for &cut in cuts.iter().skip(2).rev() {
        if let Some(v) = html5_entity(&s[..cut]) {
            return format!("{v}{}", &s[cut..]);
        }
    }
    format!("&{s}")
}

fn parse_saturating(digits: &str, radix: u32) -> u64 {
    digits.chars().fold(0u64, |acc, c| {
        let d = c.to_digit(radix).unwrap_or(0) as u64;
        acc.saturating_mul(radix as u64).saturating_add(d)
    })
}

fn numeric_charref(num: u64) -> String {
    let windows_1252 = |b: u64| tables::WINDOWS_1252_STRICT.get(b as usize).copied();
    match num {
        0x00 => "\u{fffd}".into(),
        0x0d => "\r".into(),
        0x81 | 0x8d | 0x8f | 0x90 | 0x9d => char::from_u32(num as u32)
            .map(String::from)
            .unwrap_or_default(),
        0x80..=0x9f => windows_1252(num).map(String::from).unwrap_or_default(),
        0xD800..=0xDFFF => "\u{fffd}".into(),
        n if n > 0x10FFFF => "\u{fffd}".into(),
        0x01..=0x08 | 0x0b | 0x0e..=0x1f | 0x7f | 0xFDD0..=0xFDEF => String::new(),
        n if n & 0xFFFE == 0xFFFE => String::new(),
        n => char::from_u32(n as u32)
            .map(String::from)
            .unwrap_or_default(),
    }
}

/// `ftfy.fix_text` with its default configuration.
pub fn fix_text(text: &str) -> String {
    const MAX_DECODE_LENGTH: usize = 1_000_000;
    let mut unescape = true;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        if let Some((limit, _)) = rest[..end].char_indices().nth(MAX_DECODE_LENGTH) {
            end = limit;
        }
        let segment = &rest[..end];
        if unescape && segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
        rest = &rest[end..];
    }
    out
}

/// `ftfy.fix_and_explain` on one segment: every fixer in order, until a fixed point.
fn fix_segment(text: &str, unescape: bool) -> String {
    let mut text = text.to_string();
    loop {
        let original = text.clone();
        if unescape {
            text = unescape_html_entities(&text);
        }
        text = fix_encoding(&text);
        text = fix_c1_controls(&text);
        text = translate(&text, tables::LIGATURES);
        text = translate(&text, tables::WIDTH_MAP);
        text = uncurl_quotes(&text);
        text = fix_line_breaks(&text);
        text = remove_terminal_escapes(&text);
        text.retain(|c| !is_removed_control(c));
        if is_nfc_quick(text.chars()) != IsNormalized::Yes {
            text = text.nfc().collect();
        }
        if text == original {
            return text;
        }
    }
}

/// ftfy's `unescape_html`: `&name;` / `&#...;` references of at most 24 characters.
fn unescape_html_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    static ENTITY: OnceLock<Regex> = OnceLock::new();
    let re =
        ENTITY.get_or_init(|| Regex::new(r"&#?[0-9A-Za-z]{1,24};").expect("valid entity regex"));
    re.replace_all(text, |c: &regex::Captures| {
        let whole = &c[0];
        if let Ok(i) =
            tables::FTFY_ENTITIES.binary_search_by(|(k, _)| k.as_bytes().cmp(whole.as_bytes()))
        {
            tables::FTFY_ENTITIES[i].1.to_string()
        } else if whole.starts_with("&#") {
            let unescaped = html_unescape(whole);
            if unescaped.contains(';') {
                whole.to_string()
            } else {
                unescaped
            }
        } else {
            whole.to_string()
        }
    })
    .into_owned()
}

fn translate(text: &str, table: &[(char, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match table.binary_search_by(|(k, _)| k.cmp(&c)) {
            Ok(i) => out.push_str(table[i].1),
            Err(_) => out.push(c),
        }
    }
    out
}

fn uncurl_quotes(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{201c}'..='\u{201f}' => '"',
            '\u{02bc}' | '\u{2018}'..='\u{201b}' => '\'',
            c => c,
        })
        .collect()
}

fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{0085}'], "\n")
}

fn remove_terminal_escapes(text: &str) -> String {
    if !text.contains('\u{1b}') {
        return text.to_string();
    }
    static ANSI: OnceLock<Regex> = OnceLock::new();
    let re = ANSI.get_or_init(|| Regex::new(r"\x1b\[(?:\d|;)*[a-zA-Z]").expect("valid ANSI regex"));
    re.replace_all(text, "").into_owned()
}

/// The characters ftfy's `remove_control_chars` deletes.
fn is_removed_control(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}' | '\u{206a}'..='\u{206f}'
        | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
}

/// C1 control characters read as the windows-1252 characters they encode.
fn fix_c1_controls(text: &str) -> String {
    let sloppy_1252 = charmaps().iter().find(|m| m.name == "sloppy-windows-1252");
    let Some(sloppy_1252) = sloppy_1252 else {
        return text.to_string();
    };
    text.chars()
        .map(|c| {
            if ('\u{80}'..='\u{9f}').contains(&c) {
                sloppy_1252.decode[c as usize]
            } else {
                c
            }
        })
        .collect()
}

/// One of ftfy's single-byte encodings: its decoding table and the reverse map.
struct Charmap {
    name: &'static str,
    decode: [char; 256],
    encode: HashMap<char, u8>,
}

impl Charmap {
    /// ftfy's `possible_encoding`: every character is in `[\x00-\x19\x1b-\x7f]` or is the
    /// decoding of a byte 0x80..=0xFF or 0x1A.
    fn can_encode(&self, text: &str) -> bool {
        text.chars().all(|c| {
            (c < '\u{80}' && c != '\u{1a}')
                || self.encode.get(&c).is_some_and(|&b| b >= 0x80 || b == 0x1a)
        })
    }

    /// Characters to bytes; only called after [`Charmap::can_encode`].
    fn encode(&self, text: &str) -> Vec<u8> {
        text.chars()
            .map(|c| self.encode.get(&c).copied().unwrap_or(c as u8))
            .collect()
    }
}

fn charmaps() -> &'static [Charmap] {
    static MAPS: OnceLock<Vec<Charmap>> = OnceLock::new();
    MAPS.get_or_init(|| {
        tables::CHARMAPS
            .iter()
            .map(|&(name, decode)| {
                let mut encode = HashMap::new();
                for (b, &c) in decode.iter().enumerate() {
                    encode.entry(c).or_insert(b as u8);
                }
                Charmap {
                    name,
                    decode,
                    encode,
                }
            })
            .collect()
    })
}

/// `ftfy.fix_encoding`: undo mojibake step by step until the text stops changing.
pub fn fix_encoding(text: &str) -> String {
    let mut text = text.to_string();
    loop {
        match fix_encoding_step(&text) {
            Some(fixed) if fixed != text => text = fixed,
            _ => return text,
        }
    }
}

/// One step of ftfy's mojibake repair; `None` when nothing applies.
fn fix_encoding_step(text: &str) -> Option<String> {
    if text.is_ascii() || !is_bad(text) {
        return None;
    }
    let mut latin1_possible = false;
    for map in charmaps() {
        if !map.can_encode(text) {
            continue;
        }
        latin1_possible |= map.name == "latin-1";
        let mut bytes = map.encode(text);
        if map.name != "macroman" && altered_utf8_re().is_match(&bytes) {
            bytes = restore_byte_a0(&bytes);
        }
        if map.name.starts_with("sloppy") {
            bytes = lossy_utf8_re()
                .replace_all(&bytes, "\u{fffd}".as_bytes())
                .into_owned();
        }
        let decoded = if bytes.contains(&0xED) || bytes.contains(&0xC0) {
            decode_utf8_variants(&bytes)
        } else {
            String::from_utf8(bytes).ok()
        };
        if let Some(fixed) = decoded {
            return Some(fixed);
        }
    }
    if utf8_detector_matches(text).next().is_some() {
        let fixed = decode_inconsistent_utf8(text);
        if fixed != text {
            return Some(fixed);
        }
    }
    if latin1_possible {
        // Latin-1 characters outside windows-1252 are C1 controls: read them as windows-1252
        // (strictly; an undefined byte leaves the text to the next rule).
        let strict = &tables::WINDOWS_1252_STRICT;
        let fixed: Option<String> = text
            .chars()
            .map(|c| {
                let d = strict[c as usize];
                (d != '\u{fffd}').then_some(d)
            })
            .collect();
        if let Some(fixed) = fixed.filter(|f| f != text) {
            return Some(fixed);
        }
    }
    if text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)) {
        return Some(fix_c1_controls(text));
    }
    None
}

/// Byte sequences that would be UTF-8 if a 0xA0 had not become a space.
fn altered_utf8_re() -> &'static BytesRegex {
    static RE: OnceLock<BytesRegex> = OnceLock::new();
    RE.get_or_init(|| {
        BytesRegex::new(
            r"(?-u)[\xc2\xc3\xc5\xce\xd0\xd9][ ]|[\xe2\xe3][ ][\x80-\x84\x86-\x9f\xa1-\xbf]|[\xe0-\xe3][\x80-\x84\x86-\x9f\xa1-\xbf][ ]|[\xf0][ ][\x80-\xbf][\x80-\xbf]|[\xf0][\x80-\xbf][ ][\x80-\xbf]|[\xf0][\x80-\xbf][\x80-\xbf][ ]",
        )
        .expect("valid altered-UTF-8 regex")
    })
}

/// Byte sequences of UTF-8 where a byte was lost to `?` or SUB (0x1A).
fn lossy_utf8_re() -> &'static BytesRegex {
    static RE: OnceLock<BytesRegex> = OnceLock::new();
    RE.get_or_init(|| {
        BytesRegex::new(
            r"(?-u)[\xc2-\xdf][\x1a]|[\xc2-\xc3][?]|\xed[\xa0-\xaf][\x1a?]\xed[\xb0-\xbf][\x1a?\x80-\xbf]|\xed[\xa0-\xaf][\x1a?\x80-\xbf]\xed[\xb0-\xbf][\x1a?]|[\xe0-\xef][\x1a?][\x1a\x80-\xbf]|[\xe0-\xef][\x1a\x80-\xbf][\x1a?]|[\xf0-\xf4][\x1a?][\x1a\x80-\xbf][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a?][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a\x80-\xbf][\x1a?]|\x1a",
        )
        .expect("valid lossy-UTF-8 regex")
    })
}

/// ftfy's `restore_byte_a0`: `Ã ` before a word becomes `à `, then the spaces inside
/// would-be UTF-8 sequences become 0xA0.
fn restore_byte_a0(bytes: &[u8]) -> Vec<u8> {
    const KEEP_AFTER: [&[u8]; 5] = [b" ", b"quele", b"quela", b"quilo", b"s "];
    let mut a_grave = Vec::with_capacity(bytes.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"\xc3 ")
            && !KEEP_AFTER.iter().any(|k| bytes[i + 2..].starts_with(k))
        {
            a_grave.extend_from_slice(b"\xc3\xa0 ");
            i += 2;
        } else {
            a_grave.push(bytes[i]);
            i += 1;
        }
    }
    altered_utf8_re()
        .replace_all(&a_grave, |c: &regex::bytes::Captures| {
            c[0].iter()
                .map(|&b| if b == b' ' { 0xA0 } else { b })
                .collect::<Vec<u8>>()
        })
        .into_owned()
}

/// ftfy's `utf-8-variants` codec: strict UTF-8 plus CESU-8 surrogate pairs and Java's
/// two-byte NUL (`C0 80`). Also reproduces how Python's regex `$` lets a final newline stand
/// in for the last byte of those two forms. `None` where Python raises a decode error.
fn decode_utf8_variants(bytes: &[u8]) -> Option<String> {
    let n = bytes.len();
    let final_newline_at = |k: usize| k + 1 == n && bytes[k] == b'\n';
    let mut out = String::with_capacity(n);
    let mut start = 0;
    let mut i = 0;
    while i < n {
        let b = bytes[i];
        if b == 0xC0 && i + 1 < n && (bytes[i + 1] == 0x80 || final_newline_at(i + 1)) {
            out.push_str(std::str::from_utf8(&bytes[start..i]).ok()?);
            out.push('\0');
            i += 2;
            start = i;
        } else if b == 0xED
            && i + 6 <= n
            && is_cesu8_pair(&bytes[i..i + 6], final_newline_at(i + 5))
        {
            out.push_str(std::str::from_utf8(&bytes[start..i]).ok()?);
            let s = &bytes[i..i + 6];
            let cp = (((s[1] & 0x0F) as u32) << 16)
                + (((s[2] & 0x3F) as u32) << 10)
                + (((s[4] & 0x0F) as u32) << 6)
                + (s[5] & 0x3F) as u32
                + 0x10000;
            out.push(char::from_u32(cp)?);
            i += 6;
            start = i;
        } else {
            i += 1;
        }
    }
    out.push_str(std::str::from_utf8(&bytes[start..]).ok()?);
    Some(out)
}

fn is_cesu8_pair(s: &[u8], last_is_final_newline: bool) -> bool {
    (0xA0..=0xAF).contains(&s[1])
        && (0x80..=0xBF).contains(&s[2])
        && s[3] == 0xED
        && (0xB0..=0xBF).contains(&s[4])
        && ((0x80..=0xBF).contains(&s[5]) || last_is_final_newline)
}

/// ftfy's badness heuristic: does the text contain a character sequence typical of mojibake?
pub fn is_bad(text: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(build_badness_regex).is_match(text)
}

fn build_badness_regex() -> Regex {
    use tables::{
        MOJIBAKE_BAD as BAD, MOJIBAKE_BOX as BOX, MOJIBAKE_C1 as C1, MOJIBAKE_COMMON as COMMON,
        MOJIBAKE_CURRENCY as CURRENCY, MOJIBAKE_END_PUNCTUATION as END,
        MOJIBAKE_KAOMOJI as KAOMOJI, MOJIBAKE_LAW as LAW, MOJIBAKE_LOWER_ACCENTED as LOWER_ACC,
        MOJIBAKE_LOWER_COMMON as LOWER_COMMON, MOJIBAKE_NUMERIC as NUMERIC,
        MOJIBAKE_START_PUNCTUATION as START, MOJIBAKE_UPPER_ACCENTED as UPPER_ACC,
        MOJIBAKE_UPPER_COMMON as UPPER_COMMON,
    };
    // Python's `\s` and `\w` for str patterns.
    const S: &str = r"[\s\x1C-\x1F]";
    const W: &str = r"[\p{L}\p{N}_]";
    let c = |parts: &[&str]| format!("[{}]", parts.concat());
    let alternatives = [
        c(&[C1]),
        c(&[
            BAD, LOWER_ACC, UPPER_ACC, BOX, START, END, CURRENCY, NUMERIC, LAW,
        ]) + &c(&[BAD]),
        "[a-zA-Z]".to_string() + &c(&[LOWER_COMMON, UPPER_COMMON]) + &c(&[BAD]),
        c(&[BAD])
            + &c(&[
                LOWER_ACC, UPPER_ACC, BOX, START, END, CURRENCY, NUMERIC, LAW,
            ]),
        c(&[LOWER_ACC, LOWER_COMMON, BOX, END, CURRENCY, NUMERIC]) + &c(&[UPPER_ACC]),
        c(&[BOX, END, CURRENCY, NUMERIC]) + &c(&[LOWER_ACC]),
        c(&[LOWER_ACC, BOX, END]) + &c(&[CURRENCY]),
        S.to_string() + &c(&[UPPER_ACC]) + &c(&[CURRENCY]),
        c(&[UPPER_ACC, BOX]) + &c(&[NUMERIC, LAW]),
        c(&[LOWER_ACC, UPPER_ACC, BOX, CURRENCY, END]) + &c(&[START]) + &c(&[NUMERIC]),
        c(&[LOWER_ACC, UPPER_ACC, CURRENCY, NUMERIC, BOX, LAW]) + &c(&[END]) + &c(&[START]),
        c(&[CURRENCY, NUMERIC, BOX]) + &c(&[START]),
        "[a-z]".to_string() + &c(&[UPPER_ACC]) + &c(&[START, CURRENCY]),
        c(&[BOX]) + &c(&[KAOMOJI]),
        c(&[LOWER_ACC, UPPER_ACC, CURRENCY, NUMERIC, START, END, LAW]) + &c(&[BOX]),
        c(&[BOX]) + &c(&[END]),
        c(&[LOWER_ACC, UPPER_ACC]) + &c(&[START, END]) + W,
        "[Œœ][^A-Za-z]".to_string(),
        c(&[UPPER_ACC]) + "°",
        "[ÂÃÎÐ]".to_string() + &c(&["€œŠš¢£Ÿž\u{a0}\u{ad}®©°·»", START, END, "–—´"]),
        "×[²³]".to_string(),
        {
            let arabic = c(&[COMMON, CURRENCY, BAD, NUMERIC, START, "ŸŠ®°µ»"]);
            format!("[ØÙ]{arabic}[ØÙ]{arabic}")
        },
        "à[²µ¹¼½¾]".to_string(),
        "√[±∂†≠®™´≤≥¥µø]".to_string(),
        "≈[°¢]".to_string(),
        "‚Ä[ìîïòôúùû†°¢π]".to_string(),
        "‚[âó][àä°ê]".to_string(),
        "вЂ".to_string(),
        "[ВГРС]".to_string() + &c(&[C1, BAD, START, END, CURRENCY, "°µ"]) + "[ВГРС]",
        "ГўВЂВ.[A-Za-z ]".to_string(),
        "Ã[\u{a0}¡]".to_string(),
        format!("[a-z]{S}?[ÃÂ][ ]"),
        "^[ÃÂ][ ]".to_string(),
        c(&["a-z.,?!", END]) + "Â" + &c(&[" ", START, END]),
        "β€[™\u{a0}Ά\u{ad}®°]".to_string(),
        "[ΒΓΞΟ]".to_string() + &c(&[C1, BAD, START, END, CURRENCY, "°"]) + "[ΒΓΞΟ]",
        "ā€".to_string(),
    ];
    Regex::new(&alternatives.join("|")).expect("valid badness regex")
}

/// ftfy's `UTF8_DETECTOR_RE` without its look-behind: runs of would-be UTF-8 sequences.
fn utf8_detector_body() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        use tables::{UTF8_CONTINUATION as CONT, UTF8_FIRST_OF_2, UTF8_FIRST_OF_3, UTF8_FIRST_OF_4};
        Regex::new(&format!(
            r"\A(?:[{UTF8_FIRST_OF_2}][{CONT}]|[{UTF8_FIRST_OF_3}][{CONT}]{{2}}|[{UTF8_FIRST_OF_4}][{CONT}]{{3}})+"
        ))
        .expect("valid UTF-8 detector regex")
    })
}

fn utf8_continuation_strict() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(&format!(r"\A[{}]\z", tables::UTF8_CONTINUATION_STRICT))
            .expect("valid class regex")
    })
}

/// Non-overlapping matches (byte ranges), left to right, of `(?<![strict continuation])(...)+`.
fn utf8_detector_matches(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = 0;
    let mut prev: Option<char> = None;
    std::iter::from_fn(move || {
        while pos < text.len() {
            let here = pos;
            let c = text[here..].chars().next()?;
            let allowed = prev
                .is_none_or(|p| !utf8_continuation_strict().is_match(p.encode_utf8(&mut [0; 4])));
            if allowed {
                if let Some(m) = utf8_detector_body().find(&text[here..]) {
                    pos = here + m.end();
                    prev = text[..pos].chars().next_back();
                    return Some((here, pos));
                }
            }
            prev = Some(c);
            pos = here + c.len_utf8();
        }
        None
    })
}

/// ftfy's `decode_inconsistent_utf8`: fix mojibake runs embedded in otherwise good text.
fn decode_inconsistent_utf8(text: &str) -> String {
    let total = text.chars().count();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end) in utf8_detector_matches(text).collect::<Vec<_>>() {
        let sub = &text[start..end];
        out.push_str(&text[last..start]);
        if sub.chars().count() < total && is_bad(sub) {
            out.push_str(&fix_encoding(sub));
        } else {
            out.push_str(sub);
        }
        last = end;
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftfy_documented_examples() {
        assert_eq!(fix_text("âœ” No problems"), "✔ No problems");
        assert_eq!(fix_text("&macr;\\_(ã\u{83}\u{84})_/&macr;"), "¯\\_(ツ)_/¯");
        assert_eq!(
            fix_text("Broken text&hellip; it&#x2019;s ﬂubberiﬁc!"),
            "Broken text… it's flubberific!"
        );
        assert_eq!(fix_text("ＬＯＵＤ　ＮＯＩＳＥＳ"), "LOUD NOISES");
        assert_eq!(fix_encoding("sÃ³"), "só");
        assert_eq!(fix_encoding("voilÃ le travail"), "voilà le travail");
        assert_eq!(fix_encoding("&ATILDE;&SUP3;"), "&ATILDE;&SUP3;");
    }

    #[test]
    fn utf8_variants_codec_follows_ftfy() {
        // Expected values from ftfy's `utf-8-variants` codec.
        assert_eq!(decode_utf8_variants(b"a\xc0\x80b").as_deref(), Some("a\0b"));
        assert_eq!(
            decode_utf8_variants(b"\xed\xa0\xbd\xed\xb8\x80").as_deref(),
            Some("😀")
        );
        assert_eq!(decode_utf8_variants(b"\xed\xa0\xbd"), None);
        assert_eq!(decode_utf8_variants(b"\xc0A"), None);
        // Python's `$` also matches before a final newline, which the codec's patterns use.
        assert_eq!(decode_utf8_variants(b"x\xc0\n").as_deref(), Some("x\0"));
        assert_eq!(
            decode_utf8_variants(b"\xed\xa0\xbd\xed\xb8\n").as_deref(),
            Some("😊")
        );
    }

    #[test]
    fn html_unescape_follows_python() {
        assert_eq!(html_unescape("&amp;amp;"), "&amp;");
        assert_eq!(html_unescape(&html_unescape("&amp;amp;")), "&");
        assert_eq!(html_unescape("&#65;&#x42;&#X43"), "ABC");
        assert_eq!(
            html_unescape("&#0;&#128;&#x81;&#1;&#xD800;&#99999999999999999999;"),
            "\u{fffd}€\u{81}\u{fffd}\u{fffd}"
        );
        assert_eq!(html_unescape("&notit; &ampfoo &zzz;"), "¬it; &foo &zzz;");
        assert_eq!(html_unescape("a & b"), "a & b");
    }

    #[test]
    fn caption_cleaning_chain() {
        assert_eq!(
            clean_caption("  A  Man\twith\n\n&amp;amp; “curly” quotes  "),
            "a man with & \"curly\" quotes"
        );
        assert_eq!(clean_caption("donâ€™t"), "don't");
        assert_eq!(clean_caption("ﬁne ＷＩＤＥ"), "fine wide");
        assert_eq!(clean_caption("bell\u{7}char\u{1b}[31mred"), "bellcharred");
        assert_eq!(clean_caption("e\u{301}"), "é");
        assert_eq!(clean_caption("<b>&amp;</b>"), "<b>&</b>");
    }
}
