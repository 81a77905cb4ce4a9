//! `#[derive(DomainEvent)]` for foldstore. Use it through `foldstore_core`, which
//! re-exports it (feature `derive`, on by default):
//!
//! ```ignore
//! use foldstore_core::DomainEvent;
//!
//! #[derive(serde::Serialize, serde::Deserialize, DomainEvent)]
//! enum AccountEvent {
//!     Opened { #[event(tag = "account")] id: String },
//!     #[event(name = "MoneyDeposited", version = 2)]
//!     Deposited { #[event(tag = "account")] id: String, cents: u64 },
//! }
//! ```
//!
//! The trait, what it generates and the rules are documented on
//! `foldstore_core::DomainEvent`; the tested examples live there.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenTree};
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Fields, LitInt, LitStr, parse_macro_input};

/// Implements `foldstore_core::DomainEvent` for a serde enum: each variant is one event
/// type, named after the variant unless `#[event(name = "...")]` says otherwise, at
/// schema version 1 unless `#[event(version = N)]` says otherwise. A field marked
/// `#[event(tag)]` (or `#[event(tag = "prefix")]`) adds the tag `name:value` (or
/// `prefix:value`) to the event, for Dynamic Consistency Boundary queries.
#[proc_macro_derive(DomainEvent, attributes(event))]
pub fn derive_domain_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct Variant {
    ident: syn::Ident,
    serde_name: String,
    name: String,
    version: u32,
    /// The pattern that binds the tagged fields, and the tag expressions.
    pattern: proc_macro2::TokenStream,
    tags: Vec<proc_macro2::TokenStream>,
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "DomainEvent can only be derived for an enum whose variants are the event types",
        ));
    };
    check_serde_attrs(
        &input.attrs,
        &[
            "tag",
            "content",
            "untagged",
            "rename_all",
            "rename_all_fields",
        ],
        "on an enum deriving DomainEvent: keep serde's default (externally tagged) representation; the event type travels beside the data",
    )?;
    let mut variants = Vec::new();
    for v in &data.variants {
        check_serde_attrs(
            &v.attrs,
            &["rename", "alias", "other", "untagged"],
            "on a DomainEvent variant: rename the event type with #[event(name = \"...\")] instead",
        )?;
        let mut name = v.ident.unraw().to_string();
        let mut version = 1u32;
        for attr in v.attrs.iter().filter(|a| a.path().is_ident("event")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    name = meta.value()?.parse::<LitStr>()?.value();
                    if name.is_empty() {
                        return Err(meta.error("the event type name must not be empty"));
                    }
                    Ok(())
                } else if meta.path.is_ident("version") {
                    version = meta.value()?.parse::<LitInt>()?.base10_parse()?;
                    if version == 0 {
                        return Err(meta.error("schema versions start at 1"));
                    }
                    Ok(())
                } else {
                    Err(meta.error("expected `name = \"...\"` or `version = N`"))
                }
            })?;
        }
        let (pattern, tags) = tag_pattern(&v.fields)?;
        variants.push(Variant {
            ident: v.ident.clone(),
            serde_name: v.ident.unraw().to_string(),
            name,
            version,
            pattern,
            tags,
        });
    }
    for (i, a) in variants.iter().enumerate() {
        if let Some(b) = variants[..i].iter().find(|b| b.name == a.name) {
            return Err(syn::Error::new_spanned(
                &a.ident,
                format!(
                    "variants {} and {} both have the event type name {:?}: give one of them #[event(name = \"...\")]",
                    b.ident, a.ident, a.name
                ),
            ));
        }
    }

    let ty = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let idents: Vec<_> = variants.iter().map(|v| &v.ident).collect();
    let names: Vec<_> = variants.iter().map(|v| &v.name).collect();
    let serde_names: Vec<_> = variants.iter().map(|v| &v.serde_name).collect();
    let versions: Vec<_> = variants.iter().map(|v| v.version).collect();
    let patterns: Vec<_> = variants.iter().map(|v| &v.pattern).collect();
    let tag_lists: Vec<_> = variants
        .iter()
        .map(|v| {
            let tags = &v.tags;
            quote!(::std::vec![#(#tags),*])
        })
        .collect();
    let private = quote!(::foldstore_core::domain_event::__private);

    Ok(quote! {
        impl #impl_generics ::foldstore_core::DomainEvent for #ty #ty_generics #where_clause {
            fn event_type(&self) -> &'static str {
                match self { #(Self::#idents { .. } => #names,)* }
            }
            fn schema_version(&self) -> u32 {
                match self { #(Self::#idents { .. } => #versions,)* }
            }
            fn event_types() -> &'static [(&'static str, u32)] {
                &[#((#names, #versions)),*]
            }
            fn tags(&self) -> ::std::vec::Vec<::std::string::String> {
                match self { #(Self::#idents #patterns => #tag_lists,)* }
            }
            fn encode_data(&self) -> ::std::result::Result<::std::vec::Vec<u8>, #private::JsonError> {
                let serde_name = match self { #(Self::#idents { .. } => #serde_names,)* };
                #private::encode_variant(self, serde_name)
            }
            fn decode_data(
                event_type: &str,
                data: &[u8],
            ) -> ::std::result::Result<Self, ::foldstore_core::DecodeError> {
                match event_type {
                    #(#names => #private::decode_variant(#serde_names, event_type, #versions, data),)*
                    other => ::std::result::Result::Err(::foldstore_core::DecodeError::UnknownType {
                        event_type: other.to_owned(),
                    }),
                }
            }
        }
    })
}

/// A pattern binding the fields marked `#[event(tag)]`, and one `format!` per tag.
fn tag_pattern(
    fields: &Fields,
) -> syn::Result<(proc_macro2::TokenStream, Vec<proc_macro2::TokenStream>)> {
    let mut tags = Vec::new();
    let mut binds = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let mut prefix: Option<String> = None;
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("event")) {
            attr.parse_nested_meta(|meta| {
                if !meta.path.is_ident("tag") {
                    return Err(meta.error("expected `tag` or `tag = \"prefix\"` on a field"));
                }
                let p = if meta.input.peek(syn::Token![=]) {
                    meta.value()?.parse::<LitStr>()?.value()
                } else {
                    match &field.ident {
                        Some(ident) => ident.unraw().to_string(),
                        None => {
                            return Err(meta.error(
                                "a tuple field needs a tag prefix: #[event(tag = \"account\")]",
                            ));
                        }
                    }
                };
                prefix = Some(p);
                Ok(())
            })?;
        }
        let binding = format_ident!("__tag{}", i, span = Span::call_site());
        binds.push(prefix.is_some().then(|| binding.clone()));
        if let Some(p) = prefix {
            tags.push(quote!(::std::format!("{}:{}", #p, #binding)));
        }
    }
    let pattern = match fields {
        Fields::Named(named) => {
            let parts = named.named.iter().zip(&binds).filter_map(|(f, b)| {
                let ident = f.ident.as_ref()?;
                b.as_ref().map(|b| quote!(#ident: #b))
            });
            quote!({ #(#parts,)* .. })
        }
        Fields::Unnamed(_) => {
            let parts = binds.iter().map(|b| match b {
                Some(b) => quote!(#b),
                None => quote!(_),
            });
            quote!((#(#parts),*))
        }
        Fields::Unit => quote!(),
    };
    Ok((pattern, tags))
}

/// Refuses serde attributes that change how variants are named or tagged.
fn check_serde_attrs(attrs: &[syn::Attribute], banned: &[&str], why: &str) -> syn::Result<()> {
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let syn::Meta::List(list) = &attr.meta else {
            continue;
        };
        for token in list.tokens.clone() {
            if let TokenTree::Ident(ident) = token
                && banned.iter().any(|b| ident == b)
            {
                return Err(syn::Error::new_spanned(
                    attr,
                    format!("#[serde({ident})] is not supported {why}"),
                ));
            }
        }
    }
    Ok(())
}
