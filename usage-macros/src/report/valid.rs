//! Validation: the rules between a type's `#[usage(...)]` kinds, each reported at the offending
//! word.

use proc_macro2::Span;

use super::parse::{Data, Input, Marked, Role, FIELD_KINDS};
use crate::errors::Errors;

/// Checks the whole input: `flatten` stands alone, each struct or variant has at most one model,
/// and something is marked.
pub(crate) fn check(input: &Input<'_>, errors: &mut Errors) {
    let any_marked = match &input.data {
        Data::Struct(marked) => {
            fields(marked, errors);
            !marked.is_empty()
        }
        Data::Enum(variants) => {
            for variant in variants {
                fields(&variant.marked, errors);
            }
            variants.iter().any(|variant| !variant.marked.is_empty())
        }
        Data::Union(data) => {
            errors.at(
                data.union_token.span,
                "`UsageReport` cannot be derived for a union; implement it by hand",
            );
            return;
        }
    };
    // A misspelled kind leaves its field unmarked; saying so a second time would only repeat it.
    if !any_marked && !input.misread {
        nothing_marked(input.original.ident.span(), errors);
    }
}

fn fields(marked: &[Marked<'_>], errors: &mut Errors) {
    for field in marked {
        flatten_alone(field, errors);
    }
    one_model(marked, errors);
}

fn flatten_alone(field: &Marked<'_>, errors: &mut Errors) {
    if field.roles.len() > 1 {
        if let Some((_, span)) = field.roles.iter().find(|(role, _)| *role == Role::Flatten) {
            errors.at(
                *span,
                "`flatten` takes the nested value's whole usage; use it alone",
            );
        }
    }
}

fn one_model(marked: &[Marked<'_>], errors: &mut Errors) {
    let mut models = marked
        .iter()
        .flat_map(|field| &field.roles)
        .filter(|(role, _)| *role == Role::Model);
    if models.next().is_some() {
        for (_, span) in models {
            errors.at(*span, "only one field can be the `model`");
        }
    }
}

fn nothing_marked(name: Span, errors: &mut Errors) {
    errors.at(
        name,
        format_args!("mark the fields that carry usage with #[usage(...)]: {FIELD_KINDS}"),
    );
}
