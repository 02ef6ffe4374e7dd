//! `#[derive(UsageReport)]`: parse the `#[usage(...)]` field attributes, check them, and generate
//! `UsageReport::usage`, which adds up the marked fields.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Field, Fields, Ident, Member, Path, Token, Type};

use crate::errors::Errors;

const FIELD_KINDS: &str = "input_tokens, output_tokens, cached_input_tokens, model, flatten";

/// What one field contributes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Input,
    Output,
    CachedInput,
    Model,
    Flatten,
}

struct Marked<'a> {
    member: Member,
    ty: &'a Type,
    roles: Vec<(Role, Span)>,
}

/// Entry point of `#[derive(UsageReport)]`.
pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    let mut errors = Errors::default();
    let krate = container_crate(&input, &mut errors);
    let private = quote!(#krate::__private);
    let body = match &input.data {
        Data::Struct(data) => {
            let marked = marked_fields(&data.fields, &mut errors);
            check(&marked, input.ident.span(), &mut errors);
            let bindings = marked.iter().map(|field| {
                let member = &field.member;
                quote!(&self.#member)
            });
            let adds = adds(&marked, bindings.collect(), &private);
            quote! {
                let mut __usage = #krate::TokenUsage::new();
                #(#adds)*
                __usage
            }
        }
        Data::Enum(data) => {
            let mut any_marked = false;
            let arms: Vec<TokenStream> = data
                .variants
                .iter()
                .map(|variant| {
                    let marked = marked_fields(&variant.fields, &mut errors);
                    any_marked |= !marked.is_empty();
                    one_model(&marked, &mut errors);
                    let name = &variant.ident;
                    let names: Vec<Ident> = (0..marked.len())
                        .map(|i| format_ident!("__usage_field_{}", i))
                        .collect();
                    let pattern = marked.iter().zip(&names).map(|(field, name)| {
                        let member = &field.member;
                        quote!(#member: #name)
                    });
                    let adds = adds(
                        &marked,
                        names.iter().map(ToTokens::to_token_stream).collect(),
                        &private,
                    );
                    quote! {
                        Self::#name { #(#pattern,)* .. } => { #(#adds)* }
                    }
                })
                .collect();
            if !any_marked {
                nothing_marked(input.ident.span(), &mut errors);
            }
            quote! {
                let mut __usage = #krate::TokenUsage::new();
                #[allow(unreachable_patterns)]
                match self {
                    #(#arms)*
                    _ => {}
                }
                __usage
            }
        }
        Data::Union(data) => {
            errors.at(
                data.union_token.span,
                "`UsageReport` cannot be derived for a union; implement it by hand",
            );
            quote!(#krate::TokenUsage::new())
        }
    };
    if !errors.is_empty() {
        return errors.to_compile_errors();
    }
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::UsageReport for #name #ty_generics #where_clause {
            fn usage(&self) -> #krate::TokenUsage<'_> {
                #body
            }
        }
    }
}

/// `#[usage(crate = path)]` on the type, for a renamed runtime dependency.
fn container_crate(input: &DeriveInput, errors: &mut Errors) -> TokenStream {
    let mut krate = quote!(::usage_runtime);
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("usage")) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let path: Path = meta.value()?.parse()?;
                krate = path.into_token_stream();
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

fn marked_fields<'a>(fields: &'a Fields, errors: &mut Errors) -> Vec<Marked<'a>> {
    fields
        .iter()
        .enumerate()
        .filter_map(|(index, field)| {
            let roles = roles(field, errors);
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

fn roles(field: &Field, errors: &mut Errors) -> Vec<(Role, Span)> {
    let mut roles = Vec::new();
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("usage")) {
        let parsed = attr.parse_args_with(|input: syn::parse::ParseStream<'_>| {
            syn::punctuated::Punctuated::<Ident, Token![,]>::parse_terminated_with(
                input,
                Ident::parse_any,
            )
        });
        let idents = match parsed {
            Ok(idents) => idents,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        for ident in idents {
            let role = match ident.unraw().to_string().as_str() {
                "input_tokens" => Role::Input,
                "output_tokens" => Role::Output,
                "cached_input_tokens" => Role::CachedInput,
                "model" => Role::Model,
                "flatten" => Role::Flatten,
                other => {
                    errors.at(
                        ident.span(),
                        format_args!(
                            "unknown `usage` field kind `{other}`; expected one of: {FIELD_KINDS}"
                        ),
                    );
                    continue;
                }
            };
            if roles.iter().any(|(seen, _)| *seen == role) {
                errors.at(
                    ident.span(),
                    format_args!("`{ident}` is already set on this field"),
                );
                continue;
            }
            roles.push((role, ident.span()));
        }
    }
    if roles.len() > 1 {
        if let Some((_, span)) = roles.iter().find(|(role, _)| *role == Role::Flatten) {
            errors.at(
                *span,
                "`flatten` takes the nested value's whole usage; use it alone",
            );
        }
    }
    roles
}

/// Checks a struct as a whole: something is marked, and at most one field is the model.
fn check(marked: &[Marked<'_>], name: Span, errors: &mut Errors) {
    if marked.is_empty() {
        nothing_marked(name, errors);
    }
    one_model(marked, errors);
}

fn nothing_marked(name: Span, errors: &mut Errors) {
    errors.at(
        name,
        format_args!("mark the fields that carry usage with #[usage(...)]: {FIELD_KINDS}"),
    );
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

/// The statements adding each marked field (reached through `bindings`, each a `&FieldType`).
fn adds(
    marked: &[Marked<'_>],
    bindings: Vec<TokenStream>,
    private: &TokenStream,
) -> Vec<TokenStream> {
    let mut out = Vec::new();
    for (field, binding) in marked.iter().zip(bindings) {
        let ty = field.ty;
        for (role, span) in &field.roles {
            out.push(match role {
                Role::Flatten => quote_spanned! {*span=>
                    __usage.merge(<#ty as #private::UsageReport>::usage(#binding));
                },
                Role::Model => quote_spanned! {*span=>
                    #private::set_field_model(&mut __usage, #binding);
                },
                Role::Input | Role::Output | Role::CachedInput => {
                    let kind = match role {
                        Role::Input => quote!(Input),
                        Role::Output => quote!(Output),
                        _ => quote!(CachedInput),
                    };
                    quote_spanned! {*span=>
                        #private::add_field_count(&mut __usage, #private::CountKind::#kind, #binding);
                    }
                }
            });
        }
    }
    out
}
