//! Expansion: `UsageReport::usage` adds up the marked fields through the runtime's `__private`
//! helpers. On a mistake the errors come with a stub impl, so code relying on `T: UsageReport`
//! reports nothing of its own (thiserror's `fallback.rs`).

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::{DeriveInput, Ident};

use super::parse::{self, Data, Input, Marked, Role};
use super::valid;
use crate::errors::Errors;

/// Entry point of `#[derive(UsageReport)]`.
pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    let mut errors = Errors::default();
    let input = parse::input(&input, &mut errors);
    valid::check(&input, &mut errors);
    if errors.is_empty() {
        let body = body(&input);
        implementation(&input, body)
    } else {
        let stub = implementation(&input, quote!(::core::unreachable!()));
        let errors = errors.to_compile_errors();
        quote!(#errors #stub)
    }
}

fn krate(input: &Input<'_>) -> TokenStream {
    match &input.krate {
        Some(path) => path.to_token_stream(),
        None => quote!(::usage_runtime),
    }
}

fn implementation(input: &Input<'_>, body: TokenStream) -> TokenStream {
    let krate = krate(input);
    let name = &input.original.ident;
    let (impl_generics, ty_generics, where_clause) = input.original.generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::UsageReport for #name #ty_generics #where_clause {
            fn usage(&self) -> #krate::TokenUsage<'_> {
                #body
            }
        }
    }
}

fn body(input: &Input<'_>) -> TokenStream {
    let krate = krate(input);
    let private = quote!(#krate::__private);
    match &input.data {
        Data::Struct(marked) => {
            let bindings = marked.iter().map(|field| {
                let member = &field.member;
                quote!(&self.#member)
            });
            let adds = adds(marked, bindings.collect(), &private);
            quote! {
                let mut __usage = #krate::TokenUsage::new();
                #(#adds)*
                __usage
            }
        }
        Data::Enum(variants) => {
            let arms = variants.iter().map(|variant| {
                let name = variant.ident;
                let names: Vec<_> = (0..variant.marked.len())
                    .map(|i| format_ident!("__usage_field_{}", i))
                    .collect();
                let pattern = variant.marked.iter().zip(&names).map(|(field, name)| {
                    let member = &field.member;
                    quote!(#member: #name)
                });
                let bindings = names.iter().map(ToTokens::to_token_stream).collect();
                let adds = adds(&variant.marked, bindings, &private);
                quote! {
                    Self::#name { #(#pattern,)* .. } => { #(#adds)* }
                }
            });
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
        // Rejected by validation; never generated.
        Data::Union(_) => quote!(::core::unreachable!()),
    }
}

/// The statements adding each marked field (reached through `bindings`, each a `&FieldType`).
/// Each helper is named with the field's type (`add_field_count::<f32>`), so a type that cannot
/// play its role is reported at the field's type rather than at `#[derive]`.
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
                    #private::set_field_model::<#ty>(&mut __usage, #binding);
                },
                Role::Count(kind) => {
                    let kind = Ident::new(kind, *span);
                    quote_spanned! {*span=>
                        #private::add_field_count::<#ty>(
                            &mut __usage,
                            #private::TokenKind::#kind,
                            #binding,
                        );
                    }
                }
            });
        }
    }
    out
}
