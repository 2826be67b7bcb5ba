//! IRC → Matrix: what the bridge bot hears in bridged channels, one handler per IRC command, as Matrix events
//! pushed to the runtime (which queues them durably and sends them in order per room).

use irc::proto::{Command, Message, Prefix, Response};
use lattice_bridge_core::formatting::{Mention, MentionTarget, Node, RichText};

use crate::{ids::casefold, mirc, network::Network};

mod channel;
mod membership;
mod messages;
mod puppet;

impl Network {
    /// What the bridge bot hears in its channels.
    pub(in crate::network) async fn on_listener(&self, own_nick: &str, message: Message) {
        let source = message.source_nickname().map(str::to_owned);
        let by = source.as_deref();
        // What the bridge's own connections do is never bridged back (the server has no source for its own lines).
        let theirs = by.filter(|nick| !self.is_ours(nick));
        if let Some(nick) = theirs.filter(|_| matches!(message.prefix, Some(Prefix::Nickname(..)))) {
            self.note_person(nick, &message).await;
        }
        match (&message.command, theirs) {
            (Command::PRIVMSG(target, text), Some(nick)) => self.irc_message(&message, nick, target, text, false).await,
            (Command::NOTICE(target, text), Some(nick)) => self.irc_message(&message, nick, target, text, true).await,
            (Command::Raw(command, params), Some(nick)) if command == "TAGMSG" => {
                self.irc_tagmsg(&message, nick, params).await;
            }
            (Command::Raw(command, params), Some(nick)) if command == "REDACT" => self.irc_redact(nick, params).await,
            (Command::JOIN(channel, ..), None) => self.own_join(&message, own_nick, channel).await,
            (Command::JOIN(channel, ..), Some(nick)) => self.irc_join(nick, channel).await,
            (Command::PART(channel, reason), Some(nick)) => self.irc_part(nick, channel, reason.as_deref()).await,
            (Command::QUIT(reason), Some(nick)) => self.irc_quit(nick, reason.as_deref()).await,
            (Command::KICK(channel, kicked, reason), _) => {
                self.irc_kick(by, own_nick, channel, kicked, reason.as_deref()).await;
            }
            (Command::NICK(new), Some(nick)) => self.irc_nick(nick, new).await,
            (Command::TOPIC(channel, Some(topic)), Some(_)) => self.irc_topic(by, channel, topic).await,
            (Command::Response(Response::RPL_TOPIC, params), _) if params.len() >= 3 => {
                self.irc_rpl_topic(&params[1], &params[2]).await;
            }
            (Command::Response(Response::RPL_NAMREPLY, params), _) if params.len() >= 4 => {
                self.irc_names(&params[2], &params[3]).await;
            }
            (Command::ChannelMODE(channel, modes), _) => self.irc_channel_mode(by, channel, modes).await,
            _ => {}
        }
    }

    /// An IRC message's text as a Matrix body and HTML; nicks of Matrix users become pills.
    pub(in crate::network) fn irc_to_matrix(&self, text: &str) -> (String, Option<String>) {
        let mut rich = mirc::parse(text);
        self.pill_puppet_nicks(&mut rich);
        rich.to_message()
    }

    /// Replaces a puppet's nick at the start of a message (`alice: hi`) with a pill of its Matrix user.
    pub(in crate::network) fn pill_puppet_nicks(&self, rich: &mut RichText) {
        let Some(Node::Text(first)) = rich.nodes.first() else { return };
        let Some((word, rest)) = first.split_once([':', ',']) else { return };
        let Some(user) = self.puppet_nicks.get(&casefold(word)).map(|entry| entry.clone()) else { return };
        let mention = Mention { target: MentionTarget::User(user), display: word.to_owned() };
        let rest = rest.to_owned();
        let separator = first[word.len()..].chars().next().unwrap_or(':');
        rich.nodes[0] = Node::Mention(mention);
        rich.nodes.insert(1, Node::Text(format!("{separator}{rest}")));
    }
}
