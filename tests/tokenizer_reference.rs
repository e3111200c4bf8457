//! The tokenizer against an independent Python reference (tests/reference/tokenizer_ref.py,
//! real `ftfy` and `regex`), on generated captions covering what caption files contain:
//! ordinary sentences, accents, emoji, CJK, curly quotes, dashes, punctuation runs, numbers,
//! HTML entities (also double-escaped), mojibake, full-width forms, ligatures, control
//! characters, tabs and newlines, captions longer than 77 tokens, "jekyll".
//! Tolerance: none, every id must be equal.
mod common;
use ccma::data::tokenizer::{Tokenizer, EOT_ID, MASK_ID, SOT_ID};
use common::python;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::Command;

const TEXT_LENGTH: usize = 77;

/// OpenAI's vocabulary file as the `instant-clip-tokenizer` crate ships it, when its source is
/// in the local cargo registry.
fn crate_vocabulary_file() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let sources = std::fs::read_dir(cargo_home.join("registry/src")).ok()?;
    sources
        .filter_map(|e| e.ok())
        .map(|e| {
            e.path()
                .join("instant-clip-tokenizer-0.1.0/bpe_simple_vocab_16e6.txt")
        })
        .find(|p| p.is_file())
}

/// The merge list the reference reads: the crate's original file if present, else the
/// project's copy (whose equality with the original is checked when both exist).
fn reference_merges() -> PathBuf {
    crate_vocabulary_file().unwrap_or_else(|| {
        eprintln!(
            "instant-clip-tokenizer source not found; the reference reads the project's merge list"
        );
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/data/clip_bpe_merges.txt")
    })
}

fn run_reference(texts: &[String]) -> Vec<Vec<i64>> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    let output = dir.path().join("out.json");
    let job = serde_json::json!({ "text_length": TEXT_LENGTH, "texts": texts });
    std::fs::write(&input, serde_json::to_vec(&job).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/tokenizer_ref.py");
    let result = Command::new(python())
        .arg(&script)
        .arg(reference_merges())
        .arg(&input)
        .arg(&output)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the Python reference with {}: {e}", python()));
    assert!(
        result.status.success(),
        "tokenizer reference failed (needs ftfy and regex; set CCMA_PYTHON):\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap()
}

/// UTF-8 text re-read as a single-byte code page: `latin1` reads every byte as U+0000..U+00FF,
/// otherwise as windows-1252 (bytes it leaves undefined read as Latin-1).
fn mojibake(text: &str, latin1: bool) -> String {
    const CP1252_80_9F: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    text.bytes()
        .map(|b| match b {
            0x80..=0x9F if !latin1 => CP1252_80_9F[(b - 0x80) as usize],
            b => b as char,
        })
        .collect()
}

/// Pieces of captions, grouped by what they exercise.
fn fragments() -> Vec<Vec<String>> {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let accented = owned(&[
        "café",
        "naïve",
        "Zoë",
        "Ångström",
        "façade",
        "über",
        "São Paulo",
        "piñata",
        "crème brûlée",
        "e\u{301}te\u{301}",
        "Ærøskøbing",
        "İstanbul",
        "straße",
        "GROẞE",
        "ΟΔΟΣ ΟΔΟΣ.",
        "Σίσυφος",
        "Москва",
        "Ελληνικά",
        "ǅemal",
        "ĳs",
        "Kelvin \u{212a}",
        "q\u{345}x",
        "ᾳ ᾼ",
        "'ſ ſtar",
        "Dž",
        "ﬀ",
        "ǈ",
        "Ⅻ",
        "ℌ",
    ]);
    let symbols = owned(&[
        "👕",
        "👟🎒",
        "😀 smiling",
        "🇨🇳 flag",
        "👩‍👩‍👧 family",
        "❤️",
        "✔ done",
        "★☆",
        "→",
        "©2020",
        "®",
        "™",
        "°C",
        "±5",
        "§3",
        "穿着红色外套的女人",
        "赤いシャツを着た男",
        "빨간 셔츠",
        "한국어",
        "ภาษาไทย",
        "עברית",
        "العربية",
        "हिन्दी",
        "٣ أطفال",
    ]);
    let quotes = owned(&[
        "“quoted”",
        "‘single’",
        "it’s",
        "don’t",
        "‚low‘",
        "„low“",
        "‹angle›",
        "«guillemets»",
        "ʼmodifier",
        "‛rev‟",
        "he said \"hi\"",
        "'single'",
        "`tick`",
    ]);
    let dashes = owned(&[
        "–",
        "—",
        "‐",
        "‑",
        "―",
        "−",
        "a—b",
        "2–3",
        "well-known",
        "--",
        "---",
    ]);
    let punct = owned(&[
        "!!!", "?!", "...", "…", "***", "(hello)", "[x]", "{y}", "#tag", "@user", "$20", "50%",
        "a/b", "c\\d", "~~", "^_^", ";-)", ":)", "<3", ">.<", "|", "&", "a & b", ". . .", ",,",
        "!?!?",
    ]);
    let numbers = owned(&[
        "123", "3.14", "1,000", "½", "²", "٣", "१२", "2nd", "10th", "007", "1e9", "0x1F", "12:30",
    ]);
    let entities = owned(&[
        "&amp;",
        "&lt;b&gt;",
        "&quot;hi&quot;",
        "&#39;",
        "&#x2019;",
        "&nbsp;",
        "&amp;amp;",
        "&amp;quot;",
        "&eacute;",
        "&hellip;",
        "&copy",
        "&copy;",
        "&notin;",
        "&notit;",
        "&#128;",
        "&#0;",
        "&#x110000;",
        "&EACUTE;",
        "&AMP;",
        "&ampx",
        "&#65;&#66;",
        "&zzz;",
        "&amp;#39;",
        "&amp;lt;",
        "&#xd800;",
        "&#1;",
        "&mdash;",
        "&rsquo;s",
    ]);
    let mut broken = owned(&[
        "donâ€™t",
        "cafÃ©",
        "Ã©tÃ©",
        "â€œquotedâ€\u{9d}",
        "Ã¼ber",
        "naÃ¯ve",
        "â€”",
        "voilÃ le",
        "sÃ³",
        "âœ” No problems",
        "&macr;\\_(ã\u{83}\u{84})_/&macr;",
        "Ã¢â‚¬â„¢",
        "Ð¿Ñ€Ð¸Ð²ÐµÑ‚",
        "РїСЂРёРІРµС‚",
        "Ã\u{a0}",
        "Â£5",
        "Â\u{a0}",
        "This is Ã\u{a0} test",
        "\u{80}\u{93}c1",
        "cÃ³mo estÃ¡s",
        "Ã¤Ã¶Ã¼",
    ]);
    for s in [
        "don’t",
        "naïve café",
        "“smart” — quotes…",
        "Москва",
        "😀",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "日本語",
    ] {
        broken.push(mojibake(s, false));
        broken.push(mojibake(s, true));
    }
    let wide = owned(&[
        "ＬＯＵＤ　ＮＯＩＳＥＳ",
        "１２３",
        "！",
        "ｗｉｄｅ text",
        "ｶﾀｶﾅ",
        "ﬁne",
        "ﬂower",
        "ﬃ",
        "ﬆ",
        "Ĳssel",
        "ŉ",
        "ﬅ",
    ]);
    let controls = owned(&[
        "\u{0}nul",
        "bell\u{7}",
        "\u{1b}[31mred\u{1b}[0m",
        "del\u{7f}",
        "next\u{85}line",
        "zero\u{200b}width",
        "\u{feff}bom",
        "para\u{2028}sep",
        "soft\u{ad}hyphen",
        "a\tb",
        "line1\nline2",
        "crlf\r\nend",
        "cr\rend",
        "vt\u{b}ff\u{c}",
        "\u{1c}fs\u{1f}",
        "  spaced   out  ",
        "\u{3000}ideo",
        "nbsp\u{a0}here",
        "\u{2009}thin",
        "\u{206a}x\u{fff9}",
    ]);
    let specials = owned(&[
        "jekyll",
        "Jekyll and Hyde",
        "JEKYLL's",
        "<|startoftext|>",
        "<|endoftext|>",
        "<|mask|>",
        "<b>bold</b> &amp;",
        "don't",
        "he's",
        "they're",
        "I'VE",
        "we'll",
        "she'd",
        "I'm",
        "'s",
        "'t'",
        "o'clock",
    ]);
    let captions = owned(&[
        "A woman wearing a black jacket and blue jeans, carrying a red handbag.",
        "The man is wearing a white T-shirt, grey shorts and black sneakers. He has short black hair.",
        "A young girl with long brown hair in a pink dress walks toward the camera",
        "this person wears glasses , a dark blue coat , and carries a backpack on the right shoulder .",
        "The pedestrian is in a yellow top with black trousers and white shoes; he holds an umbrella.",
        "A man in his 30s, 180cm tall, wears a navy-blue suit w/ a tie & brown leather shoes.",
    ]);
    vec![
        accented, symbols, quotes, dashes, punct, numbers, entities, broken, wide, controls,
        specials, captions,
    ]
}

fn generated_texts() -> Vec<String> {
    let groups = fragments();
    let all: Vec<&String> = groups.iter().flatten().collect();
    let mut texts: Vec<String> = all.iter().map(|s| s.to_string()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let separators = [" ", " ", " ", "", ", ", "\t", "\n", ". ", "  "];
    let captions = groups.last().unwrap();
    for i in 0..1500 {
        let mut text = String::new();
        if i % 3 == 0 {
            text.push_str(captions.choose(&mut rng).unwrap());
        }
        for _ in 0..rng.gen_range(1..7) {
            let group = groups.choose(&mut rng).unwrap();
            text.push_str(separators.choose(&mut rng).unwrap());
            text.push_str(group.choose(&mut rng).unwrap());
        }
        if rng.gen_bool(0.2) {
            text = text.to_uppercase();
        }
        texts.push(text);
    }
    // Long captions (well over 77 tokens) and random code points from many scripts.
    for n in [40, 80, 150] {
        let words: Vec<&str> = captions.iter().flat_map(|c| c.split(' ')).collect();
        texts.push(
            (0..n)
                .map(|_| *words.choose(&mut rng).unwrap())
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    for _ in 0..100 {
        let len = rng.gen_range(1..12);
        let s: String = (0..len)
            .filter_map(|_| {
                let block = [
                    0x20..0x250,
                    0x370..0x530,
                    0x2000..0x2070,
                    0x3000..0x3100,
                    0xFF00..0xFFF0,
                    0x1F300..0x1F650,
                ];
                let range = block.choose(&mut rng).unwrap().clone();
                char::from_u32(rng.gen_range(range))
            })
            .collect();
        texts.push(s);
    }
    texts.push(String::new());
    texts.push("   \t\n ".to_string());
    texts
}

#[test]
fn tokenizer_matches_python_reference() {
    let texts = generated_texts();
    assert!(texts.len() >= 1000);
    let expected = run_reference(&texts);
    assert_eq!(expected.len(), texts.len());
    let tokenizer = Tokenizer::shared();
    let mut mismatches = Vec::new();
    for (text, want) in texts.iter().zip(&expected) {
        let got = tokenizer.encode(text, TEXT_LENGTH);
        if &got != want {
            mismatches.push(format!(
                "{text:?}\n  ccma:      {got:?}\n  reference: {want:?}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} texts differ; first ones:\n{}",
        mismatches.len(),
        texts.len(),
        mismatches
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The set really exercises truncation and the dropped merge.
    let long = expected
        .iter()
        .filter(|ids| ids[TEXT_LENGTH - 1] == EOT_ID)
        .count();
    assert!(long >= 3, "only {long} texts reach 77 tokens");
    assert!(expected
        .iter()
        .all(|ids| ids[0] == SOT_ID && ids.iter().all(|&i| (0..=EOT_ID).contains(&i))));
}

/// The project's merge list is the head of OpenAI's file as the crate ships it.
#[test]
fn merge_list_is_the_crate_vocabulary_head() {
    let ours = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/data/clip_bpe_merges.txt"),
    )
    .unwrap();
    match crate_vocabulary_file() {
        Some(path) => {
            let full = std::fs::read_to_string(&path).unwrap();
            let head: Vec<&str> = full.split('\n').take(48895).collect();
            assert_eq!(
                ours.lines().collect::<Vec<_>>(),
                head,
                "differs from {}",
                path.display()
            );
        }
        None => eprintln!("instant-clip-tokenizer source not found; checked through its API only"),
    }
}

/// Same BPE as instant-clip-tokenizer (an independent implementation with the full OpenAI
/// vocabulary) on words where its simpler pre-processing agrees with CLIP's.
#[test]
fn bpe_agrees_with_instant_clip_tokenizer() {
    let theirs = instant_clip_tokenizer::Tokenizer::new();
    let ours = Tokenizer::shared();
    let mut words: Vec<String> = fragments()
        .concat()
        .iter()
        .flat_map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|w| {
            w.chars()
                .all(|c| c.is_ascii_alphanumeric() || c.is_ascii_punctuation())
        })
        .filter(|w| !w.contains(['&', '<']) && !w.to_lowercase().contains("jekyll"))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for _ in 0..3000 {
        let len = rng.gen_range(1..14);
        words.push(
            (0..len)
                .map(|_| rng.gen_range(b'a'..=b'z') as char)
                .collect(),
        );
    }
    for word in &words {
        let mut tokens = Vec::new();
        theirs.encode(word, &mut tokens);
        let expected: Vec<i64> = tokens.iter().map(|t| t.to_u16() as i64).collect();
        assert_eq!(ours.bpe_ids(word), expected, "word {word:?}");
        assert!(expected.iter().all(|&i| i < MASK_ID));
    }
}

#[test]
fn tokenize_cli_prints_one_array_per_line() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ccma"))
        .args(["tokenize", "--text-length", "8"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all("Hi there\r\nA woman in a red coat walks\n\n".as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<Vec<i64>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let t = Tokenizer::shared();
    assert_eq!(
        lines,
        vec![
            t.encode("Hi there", 8),
            t.encode("A woman in a red coat walks", 8),
            t.encode("", 8)
        ]
    );
    assert_eq!(lines[0], vec![SOT_ID, 1883, 997, EOT_ID, 0, 0, 0, 0]);
    assert_eq!(lines[1][7], EOT_ID);
}

#[test]
fn tokenize_cli_rejects_invalid_utf8_and_tiny_length() {
    use std::io::Write;
    let run = |args: &[&str], input: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ccma"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(&["tokenize"], b"fine\nbad \xff byte\n");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("UTF-8"), "{err}");
    let out = run(&["tokenize", "--text-length", "1"], b"x\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--text-length"));
}
