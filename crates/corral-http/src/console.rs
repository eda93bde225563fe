//! The landing page at `/`: what is running and where to go next. The full web console is its
//! own crate (later); this page only orients a newcomer.

use axum::response::Html;

pub async fn landing() -> Html<&'static str> {
    Html(include_str!("landing.html"))
}
