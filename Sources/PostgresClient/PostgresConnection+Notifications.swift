import CLibPQ
#if canImport(Glibc)
import Glibc
#endif

/// A `NOTIFY` received on a channel this connection listens to.
public struct PostgresNotification: Sendable, Equatable {
    public var channel: String
    public var payload: String
    /// The server process that sent it.
    public var senderProcessID: Int32
}

extension PostgresConnection {
    /// Subscribes to `channel`; the subscription survives reconnects.
    public func listen(_ channel: String) throws(PostgresError) {
        try runScript("LISTEN \(try quoteIdentifier(channel))")
        rememberListen(channel)
    }

    /// Sends `payload` to every session listening on `channel` (delivered at commit).
    public func notify(_ channel: String, payload: String = "") throws(PostgresError) {
        try query("SELECT pg_notify($1, $2)", [channel, payload])
    }

    /// Waits up to `timeoutMilliseconds` for notifications and returns those that arrived (possibly none).
    /// A lost connection throws `.connectionLost`; the next call reconnects and listens again.
    public func waitForNotifications(timeoutMilliseconds: Int32) throws(PostgresError) -> [PostgresNotification] {
        try reconnectIfNeeded()
        var received = drainNotifications()
        guard received.isEmpty else { return received }

        var descriptor = pollfd(fd: PQsocket(connectionHandle), events: Int16(POLLIN), revents: 0)
        guard descriptor.fd >= 0 else { throw connectionError() }
        let ready = poll(&descriptor, 1, timeoutMilliseconds)
        if ready < 0 && errno != EINTR {
            throw PostgresError(kind: .connectionLost, message: "poll failed with errno \(errno)")
        }
        if ready > 0 {
            guard PQconsumeInput(connectionHandle) == 1 else { throw connectionError() }
            received = drainNotifications()
        }
        return received
    }

    private func drainNotifications() -> [PostgresNotification] {
        var notifications: [PostgresNotification] = []
        while let notice = PQnotifies(connectionHandle) {
            notifications.append(PostgresNotification(
                channel: String(cString: notice.pointee.relname),
                payload: String(cString: notice.pointee.extra),
                senderProcessID: notice.pointee.be_pid
            ))
            PQfreemem(notice)
        }
        return notifications
    }
}
