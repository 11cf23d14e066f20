//! The `#[batch_pipeline]` and `#[stream_pipeline]` attributes of the mysimbdp
//! guest SDK. Use them through the SDK crate (`mysimbdp::batch_pipeline`).
//!
//! Each attribute checks the signature of the tenant's function, then generates
//! the export half of the WIT world (the SDK already holds the imports) and
//! forwards the export to the SDK's runner, which builds the report.

#![deny(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::{FnArg, ItemFn, ReturnType, parse_macro_input, spanned::Spanned};

/// The contract, embedded so the export side is generated from the same text
/// as the SDK's imports.
const WIT: &str = include_str!("../../../wit/pipeline.wit");

/// Turns `fn(file: &InputFile, ctx: &mut BatchContext) -> Result<(), Error>`
/// into the component's `ingest` export.
#[proc_macro_attribute]
pub fn batch_pipeline(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = parse_macro_input!(item as ItemFn);
    expand(attr.into(), function, Kind::Batch).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Turns `fn(batch: &[Message], ctx: &mut StreamContext) -> Result<(), Error>`
/// into the component's `process` export.
#[proc_macro_attribute]
pub fn stream_pipeline(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = parse_macro_input!(item as ItemFn);
    expand(attr.into(), function, Kind::Stream).unwrap_or_else(syn::Error::into_compile_error).into()
}

#[derive(Clone, Copy)]
enum Kind {
    Batch,
    Stream,
}

impl Kind {
    fn attribute(self) -> &'static str {
        match self {
            Kind::Batch => "#[mysimbdp::batch_pipeline]",
            Kind::Stream => "#[mysimbdp::stream_pipeline]",
        }
    }

    fn expected_signature(self) -> &'static str {
        match self {
            Kind::Batch => "fn(file: &InputFile, ctx: &mut BatchContext) -> Result<(), Error>",
            Kind::Stream => "fn(batch: &[Message], ctx: &mut StreamContext) -> Result<(), Error>",
        }
    }
}

fn expand(attr: TokenStream2, function: ItemFn, kind: Kind) -> syn::Result<TokenStream2> {
    if !attr.is_empty() {
        return Err(syn::Error::new_spanned(attr, format!("{} takes no arguments", kind.attribute())));
    }
    check_signature(&function, kind)?;

    let sdk = sdk_path()?;
    let user_fn = &function.sig.ident;
    let with = imported_interfaces(&sdk, kind);
    let module = syn::Ident::new(&format!("__mysimbdp_{}_export", user_fn), Span::call_site());

    let sdk_runtime = format!("{}::__private::wit_bindgen::rt", sdk.to_string().replace(' ', ""));

    let export = match kind {
        Kind::Batch => quote! {
            #sdk::__private::wit_bindgen::generate!({
                inline: #WIT,
                world: "mysimbdp:pipeline/batch-pipeline",
                runtime_path: #sdk_runtime,
                with: { #with },
            });
            struct Pipeline;
            impl Guest for Pipeline {
                fn ingest(
                    file: &#sdk::__private::bindings::mysimbdp::pipeline::staging::InputFile,
                ) -> ::core::result::Result<
                    #sdk::__private::bindings::mysimbdp::pipeline::types::BatchReport,
                    #sdk::__private::bindings::mysimbdp::pipeline::types::Error,
                > {
                    #sdk::__private::run_batch(file, super::#user_fn)
                }
            }
            export!(Pipeline);
        },
        Kind::Stream => quote! {
            #sdk::__private::wit_bindgen::generate!({
                inline: #WIT,
                world: "mysimbdp:pipeline/stream-pipeline",
                runtime_path: #sdk_runtime,
                with: { #with },
            });
            struct Pipeline;
            impl Guest for Pipeline {
                fn process(
                    batch: ::std::vec::Vec<#sdk::__private::bindings::mysimbdp::pipeline::types::Message>,
                ) -> ::core::result::Result<
                    #sdk::__private::bindings::mysimbdp::pipeline::types::StreamReport,
                    #sdk::__private::bindings::mysimbdp::pipeline::types::Error,
                > {
                    #sdk::__private::run_stream(batch, super::#user_fn)
                }
            }
            export!(Pipeline);
        },
    };

    // The generated bindings land in the tenant's crate, where which lints
    // fire on them varies with the world and the crate: an `expect` would
    // warn where one does not, so this generated code is the one `allow`.
    Ok(quote! {
        #function

        #[doc(hidden)]
        #[allow(clippy::all, unused, reason = "generated bindings: which lints fire on them varies with the tenant's crate")]
        mod #module {
            use super::*;
            #export
        }
    })
}

/// The `with` mappings: every interface the world imports comes from the SDK.
fn imported_interfaces(sdk: &TokenStream2, kind: Kind) -> TokenStream2 {
    let interfaces = [
        ("types", "types"),
        ("staging", "staging"),
        ("coredms", "coredms"),
        ("messaging", "messaging"),
        ("dead-letter", "dead_letter"),
        ("log", "log"),
        ("metrics", "metrics"),
        ("config", "config"),
    ];
    let imported = interfaces.iter().filter(|(wit, _)| matches!(kind, Kind::Batch) || *wit != "staging");
    let entries = imported.map(|(wit, rust)| {
        let key = format!("mysimbdp:pipeline/{wit}@0.1.0");
        let module = syn::Ident::new(rust, Span::call_site());
        quote! { #key: #sdk::__private::bindings::mysimbdp::pipeline::#module, }
    });
    quote! { #(#entries)* }
}

/// The SDK crate as the tenant named it in Cargo.toml (`mysimbdp` by convention).
fn sdk_path() -> syn::Result<TokenStream2> {
    use proc_macro_crate::{FoundCrate, crate_name};
    match crate_name("mysimbdp-guest") {
        // Only the SDK's own doctests get here; they see the SDK by its name.
        Ok(FoundCrate::Itself) => Ok(quote!(::mysimbdp_guest)),
        Ok(FoundCrate::Name(name)) => {
            let ident = syn::Ident::new(&name, Span::call_site());
            Ok(quote!(::#ident))
        }
        Err(error) => Err(syn::Error::new(
            Span::call_site(),
            format!("add the guest SDK to Cargo.toml: mysimbdp = {{ package = \"mysimbdp-guest\", ... }} ({error})"),
        )),
    }
}

fn check_signature(function: &ItemFn, kind: Kind) -> syn::Result<()> {
    let signature = &function.sig;
    let wrong = |span: &dyn ToTokensSpan, what: &str| {
        syn::Error::new(
            span.span_of(),
            format!("{what}: a function under {} must look like `{}`", kind.attribute(), kind.expected_signature()),
        )
    };
    if signature.asyncness.is_some() {
        return Err(wrong(&signature.asyncness, "pipelines are not async"));
    }
    if !signature.generics.params.is_empty() {
        return Err(wrong(&signature.generics, "pipelines take no generic parameters"));
    }
    if signature.inputs.len() != 2 {
        return Err(wrong(&signature.inputs, "expected two parameters"));
    }
    for input in &signature.inputs {
        if let FnArg::Receiver(receiver) = input {
            return Err(wrong(receiver, "a pipeline is a free function, not a method"));
        }
    }
    if let ReturnType::Default = signature.output {
        return Err(wrong(&signature.ident, "missing return type `Result<(), Error>`"));
    }
    Ok(())
}

/// Lets `check_signature` point at any piece of the signature.
trait ToTokensSpan {
    fn span_of(&self) -> Span;
}

impl<T: Spanned> ToTokensSpan for T {
    fn span_of(&self) -> Span {
        self.span()
    }
}
