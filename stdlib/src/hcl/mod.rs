pub mod api;
pub mod edit;
