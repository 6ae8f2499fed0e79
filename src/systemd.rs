//! systemd readiness notification (`sd_notify`), for units with `Type=notify`.
//!
//! systemd passes the path of a unix datagram socket in `$NOTIFY_SOCKET`; the service sends
//! `READY=1` once it serves (so `systemctl start` returns and dependent units start only then)
//! and `STOPPING=1` when it begins a clean shutdown. Outside systemd the variable is unset and
//! every call does nothing, so the server calls these unconditionally.
//!
//! This is the whole protocol Karst needs, written against std instead of linking libsystemd:
//! one datagram per state change. A name starting with `@` is a Linux abstract socket (the
//! `@` stands for the leading NUL byte).

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::UnixDatagram;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Tells systemd the node is serving: listeners bound, data directory open.
pub fn notify_ready() {
    notify_logged("READY=1");
}

/// Tells systemd the node has begun a clean shutdown.
pub fn notify_stopping() {
    notify_logged("STOPPING=1");
}

/// Sends `state` (newline-separated `KEY=VALUE` assignments, e.g. `STATUS=recovering logs`)
/// to the socket in `$NOTIFY_SOCKET`. Does nothing when it is unset.
pub fn notify(state: &str) -> io::Result<()> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) => notify_to(&socket, state),
        None => Ok(()),
    }
}

/// A failed notification is logged, not fatal: systemd then reports the unit as failing to
/// start (its start timeout), which is the operator-visible outcome anyway.
fn notify_logged(state: &str) {
    if let Err(error) = notify(state) {
        tracing::warn!(%error, state, "sd_notify failed");
    }
}

/// Sends `state` as one datagram to `socket` (a path, or `@name` for an abstract socket; an
/// empty name means "not under systemd").
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;

    let name = socket.as_bytes();
    if name.is_empty() {
        return Ok(());
    }
    let sender = UnixDatagram::unbound()?;
    let sent = if let Some(abstract_name) = name.strip_prefix(b"@") {
        send_abstract(&sender, abstract_name, state.as_bytes())?
    } else {
        sender.send_to(state.as_bytes(), socket)?
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sd_notify sent {sent} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn send_abstract(sender: &UnixDatagram, name: &[u8], message: &[u8]) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt as _;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sender.send_to_addr(message, &address)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 256];
        let length = socket.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..length].to_vec()).unwrap()
    }

    #[test]
    fn ready_and_stopping_arrive_as_datagrams_on_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let systemd = UnixDatagram::bind(&path).unwrap();

        notify_to(path.as_os_str(), "READY=1").unwrap();
        notify_to(path.as_os_str(), "STOPPING=1").unwrap();

        assert_eq!(receive(&systemd), "READY=1");
        assert_eq!(receive(&systemd), "STOPPING=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_at_sign_names_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("karst-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let systemd = UnixDatagram::bind_addr(&address).unwrap();

        notify_to(OsStr::new(&format!("@{name}")), "READY=1").unwrap();

        assert_eq!(receive(&systemd), "READY=1");
    }

    #[test]
    fn no_socket_means_no_systemd_and_no_error() {
        notify_to(OsStr::new(""), "READY=1").unwrap();
    }

    #[test]
    fn a_socket_nobody_listens_on_is_an_error_for_the_caller_to_log() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone.sock");
        assert!(notify_to(missing.as_os_str(), "READY=1").is_err());
    }
}
