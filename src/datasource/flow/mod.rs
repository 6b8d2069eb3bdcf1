//! What a WhatsApp Flow gets from wabot, in two jobs:
//!
//! * [`launch`]: how the executor's flow message opens a Flow (`navigate` on a screen
//!   with initial data, or `data_exchange` through the endpoint);
//! * [`screens`]: which screen field gets which data source connection's items, and
//!   resolving them within the endpoint's deadline.
//!
//! [`endpoint`] answers the decrypted endpoint requests with both, keeping what the
//! user submitted per flow token. Meta's formats (requests, answers, the Flow JSON's
//! routing) are in `whatsapp::flows`.

pub mod endpoint;
pub mod launch;
pub mod screens;

pub use launch::{flow_launch, has_endpoint, initial_data, initial_screen, FlowAction, FlowLaunch};
pub use screens::{
    components, components_for, resolve_screen, Component, ComponentSource, ScreenData,
};
