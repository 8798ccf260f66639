//! The terminal while `roomz chat` runs: raw mode, the alternate screen and bracketed paste
//! on the way in, all of it undone on the way out, whatever the way out is (a return, an
//! error, or a panic).

use std::io::{Write, stdout};

use crossterm::cursor::Show;
use crossterm::event::{DisableBracketedPaste, EnableBracketedPaste};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::DefaultTerminal;
use ratatui::backend::CrosstermBackend;

/// Puts the terminal back as it was when dropped.
pub struct Guard {
    pub terminal: DefaultTerminal,
}

impl Guard {
    /// Takes over the terminal, and makes sure a panic gives it back first. A panic on any
    /// thread ends the program: a chat whose background task died would only pretend to
    /// work, on a terminal no longer set up for it.
    pub fn enter() -> std::io::Result<Self> {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            hook(info);
            std::process::exit(101);
        }));
        enable_raw_mode()?;
        let entered = execute!(stdout(), EnterAlternateScreen, EnableBracketedPaste)
            .and_then(|()| ratatui::Terminal::new(CrosstermBackend::new(stdout())));
        match entered {
            Ok(terminal) => Ok(Self { terminal }),
            Err(error) => {
                restore();
                Err(error)
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.terminal.show_cursor();
        restore();
    }
}

/// Leaves raw mode, bracketed paste and the alternate screen, and shows the cursor. Safe
/// to call twice.
pub fn restore() {
    let _ = execute!(stdout(), DisableBracketedPaste, LeaveAlternateScreen, Show);
    let _ = disable_raw_mode();
}

/// Rings the terminal bell.
pub fn bell() {
    let mut out = stdout();
    let _ = out.write_all(b"\x07").and_then(|()| out.flush());
}
