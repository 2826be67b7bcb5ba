//! Ghost identity in the store: which Matrix user stands for the IRC person now using a nick. A nick change moves
//! the person's remote ID (`{network}/{casefolded nick}`) to the new nick on the same Matrix user, in the ghosts
//! table, so a restarted bridge still knows that `robert` is the ghost that was `bob`.

use lattice_bridge_core::{connector::GhostSpec, handle::Ghosts, store::Ghost};
use serde_json::Value;

use crate::ids::{Template, casefold, escape_nick};

/// The remote ID of the person using `nick` on `network`.
pub(crate) fn remote_id(network: &str, nick: &str) -> String {
    format!("{network}/{}", casefold(nick))
}

/// The ghost of the person using `nick`: the Matrix user the store maps the nick to (after nick changes, possibly
/// one named for an older nick), else the user the template names for the nick.
pub(crate) async fn from_store(ghosts: Ghosts<'_>, users: &Template, network: &str, nick: &str) -> GhostSpec {
    let remote_id = remote_id(network, nick);
    let known = match ghosts.by_remote(&remote_id).await {
        Ok(known) => known,
        Err(error) => {
            tracing::warn!(%network, %nick, %error, "cannot look up a ghost; using the one its nick names");
            None
        }
    };
    GhostSpec {
        user_id: known.as_ref().map_or_else(|| users.fill(&escape_nick(nick)), |ghost| ghost.user_id.clone()),
        remote_id,
        displayname: Some(nick.to_owned()),
        avatar_url: known.and_then(|ghost| ghost.avatar_url),
    }
}

/// Records that `ghost` (with its new nick's remote ID) is who the person is now. The profile columns keep what the
/// homeserver last showed, so the next sync still sets the new display name there.
pub(crate) async fn follow_nick(ghosts: Ghosts<'_>, ghost: &GhostSpec) -> lattice_bridge_core::store::Result<()> {
    let known = ghosts.by_user(&ghost.user_id).await?;
    ghosts
        .upsert(&Ghost {
            user_id: ghost.user_id.clone(),
            remote_id: ghost.remote_id.clone(),
            displayname: known.as_ref().and_then(|known| known.displayname.clone()),
            avatar_url: known.as_ref().and_then(|known| known.avatar_url.clone()),
            metadata: known.map_or_else(|| Value::Object(Default::default()), |known| known.metadata),
        })
        .await
}

#[cfg(test)]
mod tests {
    use lattice_bridge_core::store::{Cipher, Store};

    use super::*;

    async fn open(path: &std::path::Path) -> Store {
        Store::connect(&format!("sqlite://{}", path.display()), 1, Cipher::random()).await.unwrap()
    }

    #[tokio::test]
    async fn a_nick_change_keeps_the_ghost_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lattice.db");
        let users = Template::new("@irc_{network}_{nick}:{server_name}", "{nick}", "test", "localhost");
        let store = open(&path).await;
        let bob = from_store(Ghosts::from(&store), &users, "test", "Bob").await;
        assert_eq!(bob.user_id, "@irc_test_bob:localhost");
        assert_eq!(bob.remote_id, "test/bob");

        let robert = GhostSpec { remote_id: remote_id("test", "robert"), displayname: Some("robert".into()), ..bob };
        follow_nick(Ghosts::from(&store), &robert).await.unwrap();
        store.close().await;
        drop(store);

        let store = open(&path).await;
        let after = from_store(Ghosts::from(&store), &users, "test", "ROBERT").await;
        assert_eq!(after.user_id, "@irc_test_bob:localhost", "the ghost follows the nick across a restart");
        assert_eq!(after.displayname.as_deref(), Some("ROBERT"));
        let stranger = from_store(Ghosts::from(&store), &users, "test", "carol").await;
        assert_eq!(stranger.user_id, "@irc_test_carol:localhost");
        // What the homeserver shows is unchanged until the ghost syncs, so the new display name still gets set.
        let row = store.ghost_by_user("@irc_test_bob:localhost").await.unwrap().unwrap();
        assert_eq!((row.remote_id.as_str(), row.displayname), ("test/robert", None));
    }
}
