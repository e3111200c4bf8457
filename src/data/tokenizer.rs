//! CLIP's byte-level BPE tokenizer with IRRA's vocabulary.
//!
//! Vocabulary (49,408 ids): the 256 byte symbols, the same 256 with the end-of-word mark `</w>`,
//! the first 48,894 merges of OpenAI's `bpe_simple_vocab_16e6` minus the last one
//! (`jeky ll</w>`, which is not applied either), then `<|mask|>` = 49405,
//! `<|startoftext|>` = 49406, `<|endoftext|>` = 49407.
//!
//! The merge list in `clip_bpe_merges.txt` is the head of OpenAI CLIP's vocabulary file (MIT
//! licence), identical to the copy the `instant-clip-tokenizer` crate ships; it is compiled
//! into the binary, nothing is read at run time.
//!
//! A caption is cleaned ([`super::text_clean::clean_caption`]), split with CLIP's
//! pre-tokenisation pattern, each piece is BPE-encoded from its UTF-8 bytes, and the result is
//! `[SOT] + tokens + [EOT]`, zero-padded (or truncated, last id EOT) to the text length.
use super::text_clean::clean_caption;
use regex::Regex;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

/// `<|mask|>`, the MLM mask token.
pub const MASK_ID: i64 = 49405;
/// `<|startoftext|>`.
pub const SOT_ID: i64 = 49406;
/// `<|endoftext|>`; its position is `argmax(ids)` along a row.
pub const EOT_ID: i64 = 49407;
/// Number of ids (embedding rows).
pub const VOCAB_SIZE: usize = 49408;

const MERGES_FILE: &str = include_str!("clip_bpe_merges.txt");
/// IRRA's merge count (`49152 - 256 - 2`); the last of them is dropped from the vocabulary.
const IRRA_MERGES: usize = 48894;
/// Word-cache entries kept per thread before the cache is cleared.
const CACHE_LIMIT: usize = 200_000;

/// CLIP/IRRA tokenizer. Cheap to share: immutable after construction and `Sync`; per-word BPE
/// results are cached per thread.
pub struct Tokenizer {
    /// Symbol id of each byte (no end-of-word mark); `+ 256` gives the `</w>` variant.
    byte_ids: [u32; 256],
    /// (left id, right id) -> merged id (its rank + 512; a lower id merges first).
    merges: HashMap<(u32, u32), u32>,
    pattern: Regex,
}

/// Per-thread BPE results: piece bytes -> symbol ids.
type WordCache = HashMap<Box<[u8]>, Box<[u32]>>;

thread_local! {
    static WORD_CACHE: RefCell<WordCache> = RefCell::new(HashMap::new());
}

impl Default for Tokenizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Tokenizer {
    /// Builds the tokenizer from the compiled-in merge list (about 20 ms). Prefer [`Tokenizer::shared`].
    pub fn new() -> Tokenizer {
        let (byte_ids, unicode_of_byte) = byte_symbols();
        let mut ids: HashMap<String, u32> = HashMap::with_capacity(2 * VOCAB_SIZE);
        for b in 0..256 {
            let symbol = unicode_of_byte[b].to_string();
            ids.insert(format!("{symbol}</w>"), byte_ids[b] + 256);
            ids.insert(symbol, byte_ids[b]);
        }
        let mut merges = HashMap::with_capacity(IRRA_MERGES);
        // The file is compiled in and checked by the tests; a malformed line cannot occur at run time.
        for (rank, line) in MERGES_FILE
            .lines()
            .skip(1)
            .take(IRRA_MERGES - 1)
            .enumerate()
        {
            let (left, right) = line.split_once(' ').expect("merge lines hold two symbols");
            let id = 512 + rank as u32;
            merges.insert((ids[left], ids[right]), id);
            ids.insert(format!("{left}{right}"), id);
        }
        debug_assert_eq!(ids.len(), MASK_ID as usize);
        // CLIP's pattern, compiled case-insensitively there. Case-insensitivity only matters for
        // the special tokens and contractions (`ſ` folds to `s`) and for the negated class,
        // which then also excludes characters that fold to a letter (U+0345: such a character
        // belongs to no piece and is dropped, as in Python's `regex`).
        let pattern = Regex::new(
            r"(?i:<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d)|\p{L}+|\p{N}|(?i:[^\s\p{L}\p{N}])+",
        )
        .expect("valid pre-tokenisation pattern");
        Tokenizer {
            byte_ids,
            merges,
            pattern,
        }
    }

    /// The process-wide tokenizer, built on first use.
    pub fn shared() -> &'static Tokenizer {
        static SHARED: OnceLock<Tokenizer> = OnceLock::new();
        SHARED.get_or_init(Tokenizer::new)
    }

    /// Token ids of `text` without SOT/EOT or padding (ids in `1..49405`, or SOT/EOT where the
    /// text spells `<|startoftext|>`/`<|endoftext|>`).
    pub fn bpe_ids(&self, text: &str) -> Vec<i64> {
        let cleaned = clean_caption(text);
        let mut out = Vec::with_capacity(cleaned.len() / 3 + 2);
        for piece in self.pattern.find_iter(&cleaned) {
            match piece.as_str() {
                "<|startoftext|>" => out.push(SOT_ID),
                "<|endoftext|>" => out.push(EOT_ID),
                word => self.bpe_word(word.as_bytes(), &mut out),
            }
        }
        out
    }

    /// `[SOT] + bpe + [EOT]`, zero-padded to `text_length`; a longer sequence is cut to
    /// `text_length` with its last id replaced by EOT. Returns `text_length` ids.
    pub fn encode(&self, text: &str, text_length: usize) -> Vec<i64> {
        let mut ids = Vec::with_capacity(text_length.max(2));
        ids.push(SOT_ID);
        ids.extend(self.bpe_ids(text));
        ids.push(EOT_ID);
        if ids.len() > text_length {
            ids.truncate(text_length);
            if let Some(last) = ids.last_mut() {
                *last = EOT_ID;
            }
        }
        ids.resize(text_length, 0);
        ids
    }

    fn bpe_word(&self, word: &[u8], out: &mut Vec<i64>) {
        WORD_CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(ids) = cache.get(word) {
                out.extend(ids.iter().map(|&i| i as i64));
                return;
            }
            let ids = self.merge_word(word);
            out.extend(ids.iter().map(|&i| i as i64));
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(word.into(), ids.into_boxed_slice());
        })
    }

    /// BPE of one pre-tokenised piece: start from byte symbols (the last one with `</w>`) and
    /// repeatedly merge every occurrence, left to right, of the adjacent pair of lowest rank.
    fn merge_word(&self, word: &[u8]) -> Vec<u32> {
        let mut symbols: Vec<u32> = word.iter().map(|&b| self.byte_ids[b as usize]).collect();
        if let Some(last) = symbols.last_mut() {
            *last += 256;
        }
        while symbols.len() > 1 {
            let best = symbols
                .windows(2)
                .filter_map(|p| self.merges.get(&(p[0], p[1])).map(|&m| (m, p[0], p[1])))
                .min();
            let Some((merged, left, right)) = best else {
                break;
            };
            let mut next = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && symbols[i] == left && symbols[i + 1] == right {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(symbols[i]);
                    i += 1;
                }
            }
            symbols = next;
        }
        symbols
    }
}

/// CLIP's reversible byte -> printable-character map: bytes that are printable Latin-1
/// (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) stand for themselves and come first in the vocabulary, the
/// other 68 bytes map to U+0100.. in byte order. Returns (id of each byte, its character).
fn byte_symbols() -> ([u32; 256], [char; 256]) {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut ids = [0u32; 256];
    let mut chars = ['\0'; 256];
    let mut next_id = 0u32;
    for b in (0..=255u8).filter(|&b| printable(b)) {
        ids[b as usize] = next_id;
        chars[b as usize] = b as char;
        next_id += 1;
    }
    for (n, b) in (0..=255u8).filter(|&b| !printable(b)).enumerate() {
        ids[b as usize] = next_id;
        chars[b as usize] = char::from_u32(256 + n as u32).unwrap_or('\0');
        next_id += 1;
    }
    (ids, chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids() {
        let t = Tokenizer::shared();
        // OpenAI CLIP ids: "hi" 1883, "there" 997 ("Hi there" in instant-clip-tokenizer's docs).
        assert_eq!(&t.encode("Hi there", 6), &[SOT_ID, 1883, 997, EOT_ID, 0, 0]);
        assert_eq!(&t.encode("", 4), &[SOT_ID, EOT_ID, 0, 0]);
    }

    #[test]
    fn jekyll_is_not_merged() {
        let t = Tokenizer::shared();
        let ids = t.bpe_ids("jekyll");
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids.iter().all(|&i| i < MASK_ID));
        assert_eq!(t.merge_word(b"jekyll").len(), 2);
    }

    #[test]
    fn truncation_keeps_eot_last() {
        let t = Tokenizer::shared();
        let long = "word ".repeat(100);
        let ids = t.encode(&long, 77);
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], SOT_ID);
        assert_eq!(ids[76], EOT_ID);
        assert!(ids[1..76].iter().all(|&i| i == ids[1]));
        assert_eq!(t.encode("a b c", 1), vec![EOT_ID]);
        assert!(t.encode("a", 0).is_empty());
    }

    #[test]
    fn special_tokens_in_text() {
        let t = Tokenizer::shared();
        assert_eq!(
            t.bpe_ids("<|startoftext|> <|EndOfText|>"),
            vec![SOT_ID, EOT_ID]
        );
    }

    #[test]
    fn the_config_knows_the_vocabulary_size() {
        assert_eq!(crate::config::MIN_VOCAB_SIZE, VOCAB_SIZE as i64);
    }

    #[test]
    fn vocabulary_layout() {
        let (ids, chars) = byte_symbols();
        assert_eq!(ids[b'!' as usize], 0);
        assert_eq!(ids[0], 188);
        assert_eq!(chars[0], '\u{100}');
        let mut sorted = ids.to_vec();
        sorted.sort();
        assert_eq!(sorted, (0..256).collect::<Vec<u32>>());
        let t = Tokenizer::shared();
        assert_eq!(t.merges.len(), IRRA_MERGES - 1);
        assert_eq!(t.merges.values().max(), Some(&(MASK_ID as u32 - 1)));
        assert_eq!(MERGES_FILE.lines().count(), IRRA_MERGES + 1);
        assert_eq!(MERGES_FILE.lines().last(), Some("jeky ll</w>"));
    }
}
