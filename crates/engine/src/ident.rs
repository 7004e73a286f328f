//! The one place where names and literals become SQL text: [`pgtenant_pg::quote`], re-exported
//! under the engine's old path.
//!
//! Every identifier that reaches a statement goes through [`Ident::quote`]; the few literals that DDL
//! cannot take as bind parameters (comments, password verifiers) go through [`quote_literal`].
//! Catalog queries never build SQL from values: they use bind parameters.

pub use pgtenant_pg::quote::{enclose, quote_list, quote_literal, Ident};
