//! IRCv3 (<https://ircv3.net/irc/>): capability negotiation, SASL, message tags and what the bridge maps onto
//! Matrix through them. Each capability the bridge uses has its own module, named after it; what a connection
//! negotiated is kept per connection ([`cap::CapSet`]) so every mapping decision asks that connection.

pub(crate) mod batch;
pub(crate) mod cap;
pub(crate) mod certfp;
pub(crate) mod chathistory;
pub(crate) mod echo;
pub(crate) mod multiline;
pub(crate) mod netsplit;
pub(crate) mod people;
pub(crate) mod sasl;
pub(crate) mod server_time;
pub(crate) mod tags;
