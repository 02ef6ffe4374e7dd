//! Parsing: the derive's input into a borrowing AST that keeps the original syn nodes for spans.
//! Each `#[usage(...)]` is read at its own tokens; a mistake is reported there and reading goes on.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::punctuated::Punctuated;
use syn::{DeriveInput, Ident, Member, Path, Token, Type};

use crate::errors::Errors;

/// Every field kind, as the messages list them.
pub(crate) const FIELD_KINDS: &str = "input_tokens, output_tokens, cached_input_tokens \
     (or cache_read_input_tokens), cache_creation_input_tokens, cache_creation_1h_input_tokens, \
     reasoning_tokens, audio_input_tokens, audio_output_tokens, model, flatten";

/// Each count's word, and the runtime's `TokenKind` variant it feeds.
const COUNTS: &[(&str, &str)] = &[
    ("input_tokens", "Input"),
    ("output_tokens", "Output"),
    ("cached_input_tokens", "CachedInput"),
    ("cache_read_input_tokens", "CachedInput"),
    ("cache_creation_input_tokens", "CacheCreation"),
    ("cache_creation_1h_input_tokens", "CacheCreation1h"),
    ("reasoning_tokens", "Reasoning"),
    ("audio_input_tokens", "AudioInput"),
    ("audio_output_tokens", "AudioOutput"),
];

/// What one field contributes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A count: the name of its `TokenKind` variant.
    Count(&'static str),
    Model,
    Flatten,
}

/// The derive's input.
pub(crate) struct Input<'a> {
    pub(crate) original: &'a DeriveInput,
    /// `#[usage(crate = path)]` on the type, for a renamed runtime dependency.
    pub(crate) krate: Option<Path>,
    pub(crate) data: Data<'a>,
    /// Whether some field's `#[usage(...)]` had a mistake, which may have left the field unmarked.
    pub(crate) misread: bool,
}

pub(crate) enum Data<'a> {
    Struct(Vec<Marked<'a>>),
    Enum(Vec<Variant<'a>>),
    Union(&'a syn::DataUnion),
}

pub(crate) struct Variant<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) marked: Vec<Marked<'a>>,
}

/// A field with at least one `#[usage(...)]` kind.
pub(crate) struct Marked<'a> {
    pub(crate) member: Member,
    pub(crate) ty: &'a Type,
    /// Each kind with the span of its word, in the order written.
    pub(crate) roles: Vec<(Role, Span)>,
}

/// Reads the type's and its fields' `#[usage(...)]` attributes.
pub(crate) fn input<'a>(original: &'a DeriveInput, errors: &mut Errors) -> Input<'a> {
    let krate = container(original, errors);
    let mut misread = false;
    let mut marked_fields = |fields| marked_fields(fields, errors, &mut misread);
    let data = match &original.data {
        syn::Data::Struct(data) => Data::Struct(marked_fields(&data.fields)),
        syn::Data::Enum(data) => Data::Enum(
            data.variants
                .iter()
                .map(|variant| Variant {
                    ident: &variant.ident,
                    marked: marked_fields(&variant.fields),
                })
                .collect(),
        ),
        syn::Data::Union(data) => Data::Union(data),
    };
    Input {
        original,
        krate,
        data,
        misread,
    }
}

fn container(input: &DeriveInput, errors: &mut Errors) -> Option<Path> {
    let mut krate = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("usage")) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                krate = Some(meta.value()?.parse()?);
                Ok(())
            } else {
                Err(meta.error("unknown container argument; expected `crate = path`"))
            }
        });
        if let Err(error) = result {
            errors.push(error);
        }
    }
    krate
}

fn marked_fields<'a>(
    fields: &'a syn::Fields,
    errors: &mut Errors,
    misread: &mut bool,
) -> Vec<Marked<'a>> {
    fields
        .iter()
        .enumerate()
        .filter_map(|(index, field)| {
            let roles = roles(field, errors, misread);
            (!roles.is_empty()).then(|| Marked {
                member: match &field.ident {
                    Some(ident) => Member::Named(ident.clone()),
                    None => Member::Unnamed(index.into()),
                },
                ty: &field.ty,
                roles,
            })
        })
        .collect()
}

fn roles(field: &syn::Field, errors: &mut Errors, misread: &mut bool) -> Vec<(Role, Span)> {
    let mut roles: Vec<(Role, Span)> = Vec::new();
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("usage")) {
        let parsed = attr.parse_args_with(|input: syn::parse::ParseStream<'_>| {
            Punctuated::<Ident, Token![,]>::parse_terminated_with(input, Ident::parse_any)
        });
        let words = match parsed {
            Ok(words) => words,
            Err(error) => {
                errors.push(error);
                *misread = true;
                continue;
            }
        };
        for word in words {
            let text = word.unraw().to_string();
            let count = COUNTS.iter().find(|(name, _)| *name == text);
            let role = match text.as_str() {
                _ if count.is_some() => Role::Count(count.map_or("", |(_, kind)| kind)),
                "model" => Role::Model,
                "flatten" => Role::Flatten,
                other => {
                    errors.at(
                        word.span(),
                        format_args!(
                            "unknown `usage` field kind `{other}`; expected one of: {FIELD_KINDS}"
                        ),
                    );
                    *misread = true;
                    continue;
                }
            };
            if roles.iter().any(|(seen, _)| *seen == role) {
                errors.at(
                    word.span(),
                    format_args!("`{word}` is already set on this field"),
                );
            } else {
                roles.push((role, word.span()));
            }
        }
    }
    roles
}
