//! keepalived's configuration file read into statements: `include`s followed (globs, loops,
//! depth, file count and bytes bounded), words and blocks tokenized, `!`/`#` comments dropped.

use std::path::{Path, PathBuf};

use super::{ImportError, Origin, Stmt, perr, read_config};

/// Deepest `include` nesting followed (keepalived has no limit; a loop must end).
pub(super) const MAX_INCLUDE_DEPTH: usize = 8;
/// Most files read for one import, the top one and every include (a glob included from
/// several places is read each time).
pub(super) const MAX_FILES: usize = 256;
/// Most bytes read for one import, over every file.
const MAX_TOTAL_BYTES: u64 = 16 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Eol,
}

/// `*` and `?` in the last component of an include pattern.
fn glob_match(pat: &[u8], name: &[u8]) -> bool {
    match (pat.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pat[1..], name) || (!name.is_empty() && glob_match(pat, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pat[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pat[1..], &name[1..]),
        _ => false,
    }
}

fn include_paths(from: &Path, line: usize, pattern: &str) -> Result<Vec<PathBuf>, ImportError> {
    let base = from.parent().unwrap_or(Path::new("."));
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(vec![full]);
    }
    let dir = full.parent().unwrap_or(Path::new("."));
    let entries =
        std::fs::read_dir(dir).map_err(|e| perr(from, line, format!("include {pattern}: {e}")))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| glob_match(name.as_bytes(), n.to_string_lossy().as_bytes()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// What following `include`s has cost so far: files and bytes read, and the chain of
/// files (canonical paths) that led to the current one, where a loop shows.
#[derive(Default)]
struct Reading {
    files: usize,
    bytes: u64,
    chain: Vec<PathBuf>,
}

fn tokenize(
    path: &Path,
    depth: usize,
    reading: &mut Reading,
    out: &mut Vec<(Tok, Origin)>,
) -> Result<(), ImportError> {
    let read_err = |reason: String| ImportError::Read {
        path: path.display().to_string(),
        reason,
    };
    let canonical = std::fs::canonicalize(path).map_err(|e| read_err(e.to_string()))?;
    if let Some(i) = reading.chain.iter().position(|p| *p == canonical) {
        let cycle: Vec<String> = reading.chain[i..]
            .iter()
            .chain(std::iter::once(&canonical))
            .map(|p| p.display().to_string())
            .collect();
        return Err(read_err(format!("include loop: {}", cycle.join(" -> "))));
    }
    reading.files += 1;
    if reading.files > MAX_FILES {
        return Err(read_err(format!(
            "more than {MAX_FILES} files included in all"
        )));
    }
    let text = read_config(path)?;
    reading.bytes += text.len() as u64;
    if reading.bytes > MAX_TOTAL_BYTES {
        return Err(read_err(format!(
            "more than {} MiB read in all with the includes",
            MAX_TOTAL_BYTES >> 20
        )));
    }
    reading.chain.push(canonical);
    let done = tokenize_text(path, &text, depth, reading, out);
    reading.chain.pop();
    done
}

fn tokenize_text(
    path: &Path,
    text: &str,
    depth: usize,
    reading: &mut Reading,
    out: &mut Vec<(Tok, Origin)>,
) -> Result<(), ImportError> {
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let at = Origin {
            file: path.to_path_buf(),
            line,
        };
        let mut words: Vec<Tok> = Vec::new();
        let mut cur = String::new();
        let mut chars = raw.chars();
        let flush = |cur: &mut String, words: &mut Vec<Tok>| {
            if !cur.is_empty() {
                words.push(Tok::Word(std::mem::take(cur)));
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '"' => {
                    let mut closed = false;
                    for q in chars.by_ref() {
                        if q == '"' {
                            closed = true;
                            break;
                        }
                        cur.push(q);
                    }
                    if !closed {
                        return Err(perr(path, line, "unterminated quoted string"));
                    }
                    words.push(Tok::Word(std::mem::take(&mut cur)));
                }
                '!' | '#' if cur.is_empty() => break,
                '{' | '}' => {
                    flush(&mut cur, &mut words);
                    words.push(if c == '{' { Tok::Open } else { Tok::Close });
                }
                c if c.is_whitespace() => flush(&mut cur, &mut words),
                c => cur.push(c),
            }
        }
        flush(&mut cur, &mut words);
        if let [Tok::Word(k), rest @ ..] = words.as_slice()
            && k == "include"
        {
            let [Tok::Word(pattern)] = rest else {
                return Err(perr(path, line, "include needs exactly one file"));
            };
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(perr(
                    path,
                    line,
                    format!("include nested deeper than {MAX_INCLUDE_DEPTH}"),
                ));
            }
            for p in include_paths(path, line, pattern)? {
                tokenize(&p, depth + 1, reading, out)?;
            }
            continue;
        }
        out.extend(words.into_iter().map(|t| (t, at.clone())));
        out.push((Tok::Eol, at));
    }
    Ok(())
}

fn parse_block(
    toks: &[(Tok, Origin)],
    pos: &mut usize,
    opened: Option<&Origin>,
) -> Result<Vec<Stmt>, ImportError> {
    let mut out: Vec<Stmt> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut first: Option<Origin> = None;
    while *pos < toks.len() {
        let (t, at) = &toks[*pos];
        *pos += 1;
        match t {
            Tok::Word(w) => {
                first.get_or_insert_with(|| at.clone());
                words.push(w.clone());
            }
            Tok::Eol => {
                if let Some(o) = first.take() {
                    out.push(Stmt {
                        words: std::mem::take(&mut words),
                        at: o,
                        block: None,
                    });
                }
            }
            Tok::Open => {
                let block = parse_block(toks, pos, Some(at))?;
                match first.take() {
                    Some(o) => out.push(Stmt {
                        words: std::mem::take(&mut words),
                        at: o,
                        block: Some(block),
                    }),
                    // `name` on one line, `{` alone on the next one.
                    None => match out.last_mut() {
                        Some(prev) if prev.block.is_none() => prev.block = Some(block),
                        _ => return Err(perr(&at.file, at.line, "'{' without a name")),
                    },
                }
            }
            Tok::Close => {
                if opened.is_none() {
                    return Err(perr(&at.file, at.line, "'}' without a matching '{'"));
                }
                if let Some(o) = first.take() {
                    out.push(Stmt {
                        words: std::mem::take(&mut words),
                        at: o,
                        block: None,
                    });
                }
                return Ok(out);
            }
        }
    }
    match opened {
        Some(o) => Err(perr(&o.file, o.line, "'{' is never closed")),
        None => Ok(out),
    }
}

/// Parses a keepalived configuration file (following `include`s) into statements.
///
/// # Errors
/// [`ImportError`] naming the file and line that does not parse.
pub fn parse_keepalived(path: &Path) -> Result<Vec<Stmt>, ImportError> {
    let mut toks = Vec::new();
    tokenize(path, 0, &mut Reading::default(), &mut toks)?;
    parse_block(&toks, &mut 0, None)
}
