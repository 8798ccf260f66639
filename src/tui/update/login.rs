//! The login screen's part of `update`: its keys, the answers to a link request and a
//! login, and the advice shown when a step fails.

use crossterm::event::{KeyCode, KeyEvent};

use super::{Effect, edit, start_over};
use crate::client::ClientError;
use crate::protocol::text::{canonical_email, token_from_paste};
use crate::tui::state::{Link, LoginStep, Screen, State};

pub(super) fn login_key(state: &mut State, key: KeyEvent, effects: &mut Vec<Effect>) {
    let Screen::Login(login) = &mut state.screen else {
        return;
    };
    match key.code {
        KeyCode::Enter if login.busy => {}
        KeyCode::Enter => match login.step.clone() {
            LoginStep::Email => match canonical_email(state.editor.text()) {
                Ok(email) => {
                    login.busy = true;
                    login.error = None;
                    effects.push(Effect::RequestLink(email));
                }
                Err(error) => {
                    login.error = Some(format!("{error}. Type the address the link should go to."))
                }
            },
            LoginStep::Token { .. } => match token_from_paste(state.editor.text()) {
                Some(token) => {
                    login.busy = true;
                    login.error = None;
                    effects.push(Effect::Login(token.to_owned()));
                }
                None => {
                    login.error = Some(
                        "That does not look like a token. Paste the token from the page the link opens, \
                         or the whole link."
                            .to_owned(),
                    );
                }
            },
        },
        KeyCode::Esc => {
            if let LoginStep::Token { email } = &login.step {
                let email = email.clone();
                login.step = LoginStep::Email;
                login.error = None;
                state.editor.set(&email);
            }
        }
        _ => edit(state, key),
    }
}

pub(super) fn link_requested(state: &mut State, email: String, result: Result<(), ClientError>) {
    let Screen::Login(login) = &mut state.screen else {
        return;
    };
    login.busy = false;
    match result {
        Ok(()) => {
            login.step = LoginStep::Token { email };
            login.error = None;
            state.editor.clear();
        }
        Err(error) => login.error = Some(login_advice(&error)),
    }
}

/// What to tell someone whose login step failed.
pub(super) fn login_advice(error: &ClientError) -> String {
    match error {
        ClientError::InvalidToken => {
            "That token is wrong, expired or already used. Paste it again, or press Esc to ask for a new link."
                .to_owned()
        }
        // For this address, or from this network: the server limits both.
        ClientError::RateLimited { retry_after } => {
            let secs = retry_after.as_secs().max(1);
            let wait = if secs < 120 {
                format!("{secs} s")
            } else {
                format!("{} minutes", secs.div_ceil(60))
            };
            format!("Too many login links were asked for. Try again in {wait}.")
        }
        ClientError::Unreachable { url, .. } => {
            format!("Cannot reach the server at {url}. Check the address (--server) and that it runs.")
        }
        ClientError::Timeout { .. } => "The server did not answer in time. Try again.".to_owned(),
        ClientError::SessionExpired => "Your session expired. Log in with a new link.".to_owned(),
        ClientError::AccessRevoked => "This address may no longer use this server. Once its \
            administrator allows it again, log in with a new link."
            .to_owned(),
        other => other.to_string(),
    }
}

pub(super) fn login_failed(state: &mut State, error: &ClientError) {
    if let Screen::Login(login) = &mut state.screen {
        login.busy = false;
        login.error = Some(login_advice(error));
    }
}

pub(super) fn connect_failed(state: &mut State, error: &ClientError) {
    if error.needs_login() {
        start_over(state, login_advice(error));
        return;
    }
    let reason = login_advice(error);
    match &mut state.screen {
        Screen::Login(login) => {
            login.busy = false;
            login.error = Some(reason);
        }
        Screen::Connecting { error } => *error = Some(reason),
        Screen::Main => state.link = Link::Offline { reason },
    }
}
