//! The XEPs the bridge speaks, one module per XEP: typed elements (built with minidom's builder, parsed with
//! `TryFrom<Element>`) and the pure logic around them — parsing and building stanzas only, with no state and no
//! I/O. The [gateway](crate::gateway)'s features use them.

pub(crate) mod avatar;
pub(crate) mod caps;
pub(crate) mod chat_states;
pub(crate) mod forward;
pub(crate) mod ids;
pub(crate) mod reactions;
pub(crate) mod reply;
pub(crate) mod retract;
pub(crate) mod user_avatar;

use xmpp_parsers::minidom::Element;

/// Why an element is not the one a module parses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ElementError {
    /// Another element (name or namespace).
    #[error("not a <{name} xmlns='{namespace}'> element")]
    Unexpected {
        /// The expected name.
        name: &'static str,
        /// The expected namespace.
        namespace: &'static str,
    },
    /// A required attribute is missing.
    #[error("<{element}> lacks the `{attribute}` attribute")]
    MissingAttribute {
        /// The element.
        element: &'static str,
        /// The attribute.
        attribute: &'static str,
    },
    /// An attribute holds something unusable.
    #[error("<{element}> has a bad `{attribute}` attribute: {value:?}")]
    BadAttribute {
        /// The element.
        element: &'static str,
        /// The attribute.
        attribute: &'static str,
        /// What it held.
        value: String,
    },
}

/// Checks an element's name and namespace.
fn expect(element: &Element, name: &'static str, namespace: &'static str) -> Result<(), ElementError> {
    if element.is(name, namespace) { Ok(()) } else { Err(ElementError::Unexpected { name, namespace }) }
}

/// A required attribute.
fn required<'a>(element: &'a Element, name: &'static str, attribute: &'static str) -> Result<&'a str, ElementError> {
    element.attr(attribute).ok_or(ElementError::MissingAttribute { element: name, attribute })
}

/// The first payload of a message that parses as `T`.
pub(crate) fn payload<T: TryFrom<Element>>(payloads: &[Element]) -> Option<T> {
    payloads.iter().find_map(|element| T::try_from(element.clone()).ok())
}

/// An attribute name for minidom's builder (which wants a checked XML name).
pub(crate) fn name(name: &'static str) -> xmpp_parsers::minidom::rxml::NcName {
    xmpp_parsers::minidom::rxml::NcName::try_from(name).expect("attribute names in this crate are XML names")
}
