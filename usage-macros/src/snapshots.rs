//! Expansion snapshots: each `tests/expand/<name>.rs` at the workspace root holds annotated items;
//! its pretty-printed expansion must equal `<name>.expanded.rs`. Set `USAGE_BLESS=1` to rewrite them.

use std::path::PathBuf;

use quote::ToTokens;
use syn::{Item, Meta};

fn expand_file(source: &str) -> String {
    let file: syn::File = syn::parse_str(source).expect("snapshot input parses");
    let mut out = TokenStreamFile::default();
    for item in file.items {
        out.push(expand_item(item));
    }
    let expanded: syn::File = syn::parse2(out.tokens).expect("expansion parses as a file");
    prettyplease::unparse(&expanded)
}

#[derive(Default)]
struct TokenStreamFile {
    tokens: proc_macro2::TokenStream,
}

impl TokenStreamFile {
    fn push(&mut self, tokens: proc_macro2::TokenStream) {
        self.tokens.extend(tokens);
    }
}

/// Expands the item's `#[track_usage(...)]` attribute, if it has one, or follows a type with
/// what `#[derive(UsageReport)]` generates for it.
fn expand_item(mut item: Item) -> proc_macro2::TokenStream {
    let attrs = match &mut item {
        Item::Fn(f) => &mut f.attrs,
        Item::Impl(i) => &mut i.attrs,
        Item::Struct(_) | Item::Enum(_) => return derive_usage_report(item),
        _ => return item.into_token_stream(),
    };
    let Some(index) = attrs.iter().position(|a| a.path().is_ident("track_usage")) else {
        return item.into_token_stream();
    };
    let attr = attrs.remove(index);
    let args = match attr.meta {
        Meta::List(list) => list.tokens,
        _ => proc_macro2::TokenStream::new(),
    };
    crate::expand::track_usage(args, item.into_token_stream())
}

/// The item as written (less its derive, which the compiler would strip), then the impl.
fn derive_usage_report(mut item: Item) -> proc_macro2::TokenStream {
    let attrs = match &mut item {
        Item::Struct(s) => &mut s.attrs,
        Item::Enum(e) => &mut e.attrs,
        _ => unreachable!("only types are derived"),
    };
    let Some(index) = attrs.iter().position(|a| a.path().is_ident("derive")) else {
        return item.into_token_stream();
    };
    attrs.remove(index);
    let derived = crate::report::derive(item.to_token_stream());
    let mut out = item.into_token_stream();
    out.extend(derived);
    out
}

#[test]
fn expansions_match_snapshots() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/expand");
    let bless = std::env::var_os("USAGE_BLESS").is_some();
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/expand exists")
        .map(|e| e.expect("readable entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".rs") || name.ends_with(".expanded.rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let actual = expand_file(&source);
        let expected_path = path.with_extension("expanded.rs");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
        } else {
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
                panic!(
                    "missing {}; run with USAGE_BLESS=1",
                    expected_path.display()
                )
            });
            assert_eq!(
                actual, expected,
                "expansion of {name} changed; review it and run with USAGE_BLESS=1"
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 4,
        "expected at least 4 snapshot inputs, found {checked}"
    );
}
