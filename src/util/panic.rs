//! Running code that may panic on input we do not control (a damaged database file) and turning
//! the panic into an error, without the default hook printing a backtrace notice first.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// `Some` while this thread runs [`catch_quietly`]: the panic hook stores the message here.
    static CAUGHT: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

static INSTALL_HOOK: Once = Once::new();

/// Runs `f`; a panic inside it becomes `Err(message)` and prints nothing.
pub fn catch_quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    INSTALL_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let quiet = CAUGHT.with(|caught| match caught.borrow_mut().as_mut() {
                Some(slot) => {
                    let payload = info
                        .payload()
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| info.payload().downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panicked".to_owned());
                    let at = info
                        .location()
                        .map(|l| format!(" at {}:{}", l.file(), l.line()))
                        .unwrap_or_default();
                    *slot = Some(format!("{}{at}", payload.replace('\n', "; ")));
                    true
                }
                None => false,
            });
            if !quiet {
                previous(info);
            }
        }));
    });
    let outer = CAUGHT.with(|caught| caught.borrow_mut().replace(None));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    let message = CAUGHT.with(|caught| std::mem::replace(&mut *caught.borrow_mut(), outer));
    result.map_err(|_| message.flatten().unwrap_or_else(|| "panicked".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_values_pass_through() {
        assert_eq!(catch_quietly(|| 7), Ok(7));
        let caught = catch_quietly(|| -> u8 { unreachable!("bad page") }).unwrap_err();
        assert!(caught.contains("bad page"), "{caught}");
        // Nested: the inner catch does not swallow the outer one's state.
        let outer = catch_quietly(|| {
            let inner = catch_quietly(|| panic!("inner"));
            assert!(inner.unwrap_err().contains("inner"));
            panic!("outer")
        });
        assert!(outer.unwrap_err().contains("outer"));
    }
}
