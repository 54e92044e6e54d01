//! The documentation against the code, with no server: `docs/metrics.md` lists exactly
//! the metrics of `tollgate::metrics::ALL`; the route tables under `docs/` name exactly
//! the operations of the OpenAPI document (which `tests/openapi.rs` holds to the
//! router); every flag of `tollgate --help` has a row, with its variable, in the table of
//! `docs/configuration.md`; every relative link of the README, `docs/` and the other
//! top-level pages points at a file and heading that exist.
//! Docs drift silently otherwise: a reader finds a metric, a route or a flag missing, or
//! a link that leads nowhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every Markdown page under `docs/`, sorted.
fn doc_pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    pages
}

/// The cells of a Markdown table row (`| a | b |`), trimmed; `None` for other lines.
fn cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::trim).collect())
}

/// `` `x` `` → `x`.
fn code(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')?.strip_suffix('`')
}

/// The metric names of the tables of `docs/metrics.md` (first cell, in backticks, one or
/// several separated by commas).
fn documented_metrics(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let Some(row) = cells(line) else { continue };
        for part in row[0].split(',') {
            if let Some(name) = code(part.trim())
                && name.starts_with("tollgate_")
            {
                names.push(name.to_string());
            }
        }
    }
    names
}

#[test]
fn metrics_doc_lists_exactly_the_metrics_of_all() {
    let text = read(&root().join("docs/metrics.md"));
    let listed = documented_metrics(&text);
    let unique: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "docs/metrics.md lists a metric twice"
    );
    let all: BTreeSet<&str> = tollgate::metrics::ALL.iter().copied().collect();
    let missing: Vec<_> = all.difference(&unique).collect();
    let unknown: Vec<_> = unique.difference(&all).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/metrics.md must list exactly metrics::ALL: missing {missing:?}, not in ALL {unknown:?}"
    );
}

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

/// `(METHOD, path)` of every route-table row under `docs/`: `` | `GET` | `/path` | … ``.
fn documented_routes() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for page in doc_pages() {
        for line in read(&page).lines() {
            let Some(row) = cells(line) else { continue };
            let (Some(method), Some(path)) = (
                row.first().and_then(|c| code(c)),
                row.get(1).and_then(|c| code(c)),
            ) else {
                continue;
            };
            if METHODS.contains(&method) && path.starts_with('/') {
                let fresh = routes.insert((method.to_string(), path.to_string()));
                assert!(
                    fresh,
                    "{method} {path} is documented twice (again in {page:?})"
                );
            }
        }
    }
    routes
}

/// `(METHOD, path)` of every operation of the OpenAPI document the server serves.
fn openapi_routes() -> BTreeSet<(String, String)> {
    let doc: serde_json::Value =
        serde_json::from_str(tollgate::api::openapi::document()).expect("the document is JSON");
    let paths = doc["paths"].as_object().expect("paths");
    let mut routes = BTreeSet::new();
    for (path, item) in paths {
        for method in item.as_object().expect("a path item").keys() {
            let upper = method.to_ascii_uppercase();
            if METHODS.contains(&upper.as_str()) {
                routes.insert((upper, path.clone()));
            }
        }
    }
    routes
}

#[test]
fn route_tables_name_exactly_the_served_routes() {
    let documented = documented_routes();
    let served = openapi_routes();
    assert!(
        served.len() >= 10,
        "the document has its routes: {served:?}"
    );
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "the route tables under docs/ must name exactly the served routes: \
         undocumented {undocumented:?}, not served {unknown:?}"
    );
}

/// The rows of the flag table of `docs/configuration.md`: (first cell, whole row).
fn flag_rows() -> Vec<(String, String)> {
    read(&root().join("docs/configuration.md"))
        .lines()
        .filter_map(|line| {
            let row = cells(line)?;
            row[0]
                .contains("`--")
                .then(|| (row[0].to_string(), line.to_string()))
        })
        .collect()
}

#[test]
fn every_flag_has_a_row_with_its_variable_in_the_configuration_table() {
    let rows = flag_rows();
    let command = <tollgate::Settings as clap::CommandFactory>::command();
    let mut checked = 0;
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" || long == "version" {
            continue;
        }
        let flag = format!("`--{long}`");
        let Some((_, row)) = rows.iter().find(|(first, _)| first.contains(&flag)) else {
            panic!("--{long} has no row in the table of docs/configuration.md");
        };
        if let Some(env) = arg.get_env() {
            let env = format!("`{}`", env.to_string_lossy());
            assert!(
                row.contains(&env),
                "the row of --{long} in docs/configuration.md does not name {env}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} flags found");
}

/// GitHub's anchor of a heading: lower case, letters, digits, `-` and `_` kept, spaces
/// become `-`, everything else dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown page's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced && line.starts_with('#') {
            let heading = line.trim_start_matches('#');
            if heading.starts_with(' ') {
                out.insert(slug(heading));
            }
        }
    }
    out
}

/// Link targets of `[text](target)` outside code blocks and inline code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let outside_code: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = outside_code.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn relative_links_lead_to_files_and_headings_that_exist() {
    let mut pages = doc_pages();
    for top in [
        "README.md",
        "ARCHITECTURE.md",
        "CONTRIBUTING.md",
        "CHANGELOG.md",
    ] {
        pages.push(root().join(top));
    }
    let mut broken = Vec::new();
    let mut followed = 0;
    for page in &pages {
        let text = read(page);
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let dest = if file.is_empty() {
                page.clone()
            } else {
                page.parent().expect("a page's directory").join(file)
            };
            followed += 1;
            if !dest.exists() {
                broken.push(format!("{}: {target} (no such file)", page.display()));
                continue;
            }
            if !anchor.is_empty() && !anchors(&read(&dest)).contains(anchor) {
                broken.push(format!("{}: {target} (no such heading)", page.display()));
            }
        }
    }
    assert!(followed > 50, "only {followed} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(
        slug(" The watched file: `--configs-file`"),
        "the-watched-file---configs-file"
    );
    assert_eq!(
        slug(" Configs outlive Redis's data"),
        "configs-outlive-rediss-data"
    );
    assert_eq!(slug(" `POST /v1/usage`"), "post-v1usage");
}
