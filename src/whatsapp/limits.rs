//! Meta's limits on the messages wabot sends, in characters (PROTOCOL.md "Sending").
//! The one place they are written: the engine cuts its messages to them
//! (`engine::limits` names them for its own use) and `outbound` enforces them again
//! on every Graph API body. A body Meta refuses fails the message for good (131009).

pub const TEXT_BODY: usize = 4096;
pub const INTERACTIVE_BODY: usize = 1024;
pub const LIST_BODY: usize = 4096;
pub const HEADER_TEXT: usize = 60;
pub const FOOTER_TEXT: usize = 60;
pub const BUTTONS: usize = 3;
pub const BUTTON_ID: usize = 256;
pub const BUTTON_TITLE: usize = 20;
pub const LIST_BUTTON: usize = 20;
pub const SECTIONS: usize = 10;
pub const ROWS: usize = 10;
pub const SECTION_TITLE: usize = 24;
pub const ROW_ID: usize = 200;
pub const ROW_TITLE: usize = 24;
pub const ROW_DESCRIPTION: usize = 72;
pub const FLOW_CTA: usize = 20;
/// A media message's caption (images, videos, documents).
pub const CAPTION: usize = 1024;
/// A CTA URL button's label.
pub const CTA_DISPLAY_TEXT: usize = 20;
