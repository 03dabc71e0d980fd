import CLibWebSockets
import Dispatch
import VoiceMeterDomain

/// The lws protocol callback: a global function because C needs a plain function pointer. It finds
/// the server through the context's user pointer and hands every event to `handle`.
func serverCallback(
    _ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
    _ input: UnsafeMutableRawPointer?, _ length: Int
) -> Int32 {
    guard let wsi, let server = LWS.owner(of: wsi, as: WebSocketServer.self) else { return 0 }
    return server.handle(wsi, reason, user, input, length)
}

extension WebSocketServer {
    /// Set by `start` before any callback runs.
    private var delegate: any WebSocketServerDelegate { loop.delegate! }

    /// Runs on the service thread only; this is the one place lws events become actions.
    func handle(_ wsi: OpaquePointer, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
                _ input: UnsafeMutableRawPointer?, _ length: Int) -> Int32 {
        loop.assertOnServiceThread()
        switch reason {
        case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
            return confirmUpgrade(wsi)
        case LWS_CALLBACK_ESTABLISHED:
            opened(wsi)
        case LWS_CALLBACK_RECEIVE:
            return received(wsi, input, length)
        case LWS_CALLBACK_SERVER_WRITEABLE:
            return writable(wsi)
        case LWS_CALLBACK_RECEIVE_PONG:
            heard(from: LWS.connectionID(of: wsi))
        case LWS_CALLBACK_CLOSED:
            closed(wsi)
        case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
            woken()
        case LWS_CALLBACK_HTTP:
            return httpRequest(wsi, path: input.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "/")
        case LWS_CALLBACK_HTTP_WRITEABLE:
            return httpWritable(wsi)
        case LWS_CALLBACK_CLOSED_HTTP:
            let id = LWS.connectionID(of: wsi)
            loop.pendingHTTP[id] = nil
            loop.httpConnections[id] = nil
        case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
            // `user` is the vhost's SSL_CTX: TLS 1.2 and newer only, no compression.
            if let user, !LWS.hardenTLS(user) { return 1 }
        default:
            break
        }
        return 0
    }

    private static var now: UInt64 { DispatchTime.now().uptimeNanoseconds }

    // MARK: WebSocket connections

    private func confirmUpgrade(_ wsi: OpaquePointer) -> Int32 {
        let path = LWS.header(wsi, WSI_TOKEN_GET_URI) ?? ""
        let peer = LWS.peerAddress(wsi)
        let refusal: (Int, String)?
        if path != configuration.path {
            refusal = (404, "no WebSocket endpoint at \(path); use \(configuration.path)")
        } else if LWS.header(wsi, WSI_TOKEN_VERSION) != "13" || LWS.header(wsi, WSI_TOKEN_KEY) == nil {
            refusal = (400, "a WebSocket upgrade needs Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key (RFC 6455)")
        } else if outboxes.isStopping || loop.refusingUpgrades.load(ordering: .relaxed) {
            refusal = (503, "the server is shutting down; reconnect to another node or retry shortly")
        } else if loop.connections.count >= configuration.limits.connectionsMax {
            refusal = (503, "the server is at its connection limit (\(configuration.limits.connectionsMax)); retry later")
        } else if loop.connectionsPerPeer[peer, default: 0] >= configuration.limits.connectionsPerPeerMax {
            refusal = (429, "too many connections from \(peer) (limit \(configuration.limits.connectionsPerPeerMax)); carry several calls per connection")
        } else if let allowed = configuration.allowedOrigins, let origin = LWS.header(wsi, WSI_TOKEN_ORIGIN), !allowed.contains(origin) {
            refusal = (403, "origin \(origin) is not allowed")
        } else {
            switch delegate.authorize(Self.upgradeRequest(wsi, peer: peer)) {
            case .accept: refusal = nil
            case .refuse(let status, let reason): refusal = (status, reason)
            }
        }
        guard let (status, reason) = refusal else { return 0 }
        let body = #"{"error":"\#(status == 401 ? "unauthorized" : "refused")","message":\#(JSONValue.string(reason).serialized)}"#
        writeRefusal(wsi, HTTPResponse(status: status, body: body + "\n"),
                     extraHeaders: status == 401 ? [("WWW-Authenticate", #"Bearer realm="voicemeter""#)] : [])
        return 1
    }

    private func opened(_ wsi: OpaquePointer) {
        let id = loop.allocateID()
        LWS.setConnectionID(id, on: wsi)
        let peer = LWS.peerAddress(wsi)
        loop.connections[id] = ServiceLoop.Connection(wsi: wsi, peer: peer, assembler: MessageAssembler(limits: configuration.limits, nowNanoseconds: Self.now),
                                                      lastHeardNanoseconds: Self.now)
        loop.connectionsPerPeer[peer, default: 0] += 1
        outboxes.open(id)
        // The request's headers are still there while the connection is being established.
        delegate.connectionOpened(ConnectionID(rawValue: id), request: Self.upgradeRequest(wsi, peer: peer))
    }

    private func received(_ wsi: OpaquePointer, _ input: UnsafeMutableRawPointer?, _ length: Int) -> Int32 {
        let id = LWS.connectionID(of: wsi)
        guard loop.connections[id] != nil else { return -1 }
        // A connection being closed (a revoked token, a shutdown) is not read any more: nothing it
        // sends from now on is processed, so nothing of it is acknowledged.
        guard loop.connections[id]!.pendingClose == nil else { return 0 }
        let now = Self.now
        let chunk = UnsafeRawBufferPointer(start: input, count: input == nil ? 0 : length)
        loop.connections[id]!.noteHeard(at: now)
        let message: InboundMessage
        switch loop.connections[id]!.assembler.receive(chunk, endsMessage: LWS.endsMessage(wsi), isBinary: LWS.isBinary(wsi), nowNanoseconds: now) {
        case .incomplete: return 0
        case .ready(let assembled): message = assembled
        case .close(let code, let reason):
            LWS.setCloseReason(wsi, code: code, reason: reason)
            return -1
        }
        switch delegate.received(message, from: ConnectionID(rawValue: id), at: now) {
        case .keepReading:
            break
        case .pauseReading:
            guard loop.connections[id]?.paused == false else { break }
            // Takes effect at once: lws holds back what it already read until resumed.
            loop.connections[id]!.paused = true
            loop.pausedCount.add(1, ordering: .relaxed)
            LWS.setReceiving(wsi, false)
        case .close(let code, let reason):
            LWS.setCloseReason(wsi, code: code, reason: reason)
            return -1
        }
        return 0
    }

    private func writable(_ wsi: OpaquePointer) -> Int32 {
        let id = LWS.connectionID(of: wsi)
        guard let connection = loop.connections[id] else { return -1 }
        if connection.pingDue {
            loop.connections[id]!.pingDue = false
            guard LWS.writePing(wsi) else { return -1 }
            LWS.requestWritable(wsi)
            return 0
        }
        guard let burst = LWS.writeBurst(wsi, next: { outboxes.next(for: id) }) else { return -1 }
        if burst.written > 0 || burst.more {
            if burst.more || connection.pendingClose != nil { LWS.requestWritable(wsi) }
            return 0
        }
        if let close = connection.pendingClose {
            LWS.setCloseReason(wsi, code: close.code, reason: close.reason)
            return -1
        }
        return 0
    }

    private func closed(_ wsi: OpaquePointer) {
        let id = LWS.connectionID(of: wsi)
        guard let connection = loop.connections.removeValue(forKey: id) else { return }
        if connection.paused { loop.pausedCount.subtract(1, ordering: .relaxed) }
        loop.connectionsPerPeer[connection.peer, default: 1] -= 1
        if loop.connectionsPerPeer[connection.peer] == 0 { loop.connectionsPerPeer[connection.peer] = nil }
        outboxes.remove(id)
        delegate.connectionClosed(ConnectionID(rawValue: id))
    }

    /// Another thread queued messages or commands, or asked to stop.
    private func woken() {
        let (ready, commands, stopping) = outboxes.drainWake()
        for id in ready {
            if let wsi = loop.connections[id]?.wsi { LWS.requestWritable(wsi) }
        }
        for command in commands {
            switch command {
            case .resumeAllPaused:
                // A graceful stop keeps every connection paused until it closes them.
                guard !loop.refusingUpgrades.load(ordering: .relaxed) else { continue }
                let now = Self.now
                for (id, connection) in loop.connections where connection.paused {
                    loop.connections[id]!.paused = false
                    loop.connections[id]!.noteHeard(at: now)  // it was not read while paused: its idle time starts now
                    loop.pausedCount.subtract(1, ordering: .relaxed)
                    LWS.setReceiving(connection.wsi, true)
                }
            case .httpAnswered(let id, let response):
                guard let wsi = loop.httpConnections[id] else { continue }
                loop.pendingHTTP[id] = response
                LWS.requestWritable(wsi)
            case .stopReceivingAll:
                for (id, connection) in loop.connections where !connection.paused {
                    loop.connections[id]!.paused = true
                    loop.pausedCount.add(1, ordering: .relaxed)
                    LWS.setReceiving(connection.wsi, false)
                }
                loop.receivingStopped.signal()
            case .close(let id, let code, let reason):
                requestClose(id, code: code, reason: reason)
            }
        }
        if stopping && !loop.closingAll {
            loop.closingAll = true
            for id in Array(loop.connections.keys) { requestClose(id, code: 1001, reason: "server shutting down") }
        }
        checkIdleConnections()
        if shouldStopServing() { loop.eventLoop?.stop() }
    }

    private func heard(from id: Int) {
        loop.connections[id]?.noteHeard(at: Self.now)
    }

    /// Once a second: pings a connection silent for the idle timeout, and drops one whose ping
    /// went unanswered for as long, counted from when the ping was asked for (a peer that stops
    /// reading never lets it be written). A paused connection is not read, so it is left alone.
    private func checkIdleConnections() {
        let now = Self.now
        guard now - loop.idleCheckedNanoseconds >= 1_000_000_000 else { return }
        loop.idleCheckedNanoseconds = now
        let timeout = UInt64(configuration.limits.idleTimeoutSeconds) * 1_000_000_000
        for (id, connection) in loop.connections where !connection.paused {
            if let sent = connection.pingSentNanoseconds {
                if now - sent >= timeout { LWS.dropSoon(connection.wsi) }
            } else if now - connection.lastHeardNanoseconds >= timeout {
                loop.connections[id]!.pingDue = true
                loop.connections[id]!.pingSentNanoseconds = now
                LWS.requestWritable(connection.wsi)
            }
        }
    }

    private func requestClose(_ id: Int, code: UInt16, reason: String) {
        guard loop.connections[id] != nil, loop.connections[id]!.pendingClose == nil else { return }
        loop.connections[id]!.pendingClose = (code, reason)
        // A peer that stops reading never lets the close frame out: drop it after the idle timeout.
        LWS.closeWithin(loop.connections[id]!.wsi, seconds: configuration.limits.idleTimeoutSeconds)
        LWS.requestWritable(loop.connections[id]!.wsi)
    }

    private static func upgradeRequest(_ wsi: OpaquePointer, peer: String) -> UpgradeRequest {
        UpgradeRequest(peer: peer, bearerToken: bearerToken(LWS.header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION)), origin: LWS.header(wsi, WSI_TOKEN_ORIGIN))
    }

    static func bearerToken(_ header: String?) -> String? {
        guard let header else { return nil }
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return String(parts[1]).trimmingCharacters(in: .whitespaces)
    }

    // MARK: Plain HTTP

    private func httpRequest(_ wsi: OpaquePointer, path: String) -> Int32 {
        let request = HTTPRequest(
            method: LWS.method(wsi), path: path, query: LWS.queryString(wsi),
            bearerToken: Self.bearerToken(LWS.header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION)),
            accept: LWS.header(wsi, WSI_TOKEN_HTTP_ACCEPT),
            cookie: LWS.header(wsi, WSI_TOKEN_HTTP_COOKIE)
        )
        let id = loop.allocateID()
        LWS.setConnectionID(id, on: wsi)
        loop.httpConnections[id] = wsi
        // Bound the wait for an answer; lws closes the connection if it does not come.
        LWS.awaitAnswer(wsi, seconds: 30)
        delegate.respond(to: request) { [outboxes, serviceWake] response in
            if outboxes.post(.httpAnswered(id, response)) { serviceWake.wake() }
        }
        return 0
    }

    private func httpWritable(_ wsi: OpaquePointer) -> Int32 {
        let id = LWS.connectionID(of: wsi)
        guard let response = loop.pendingHTTP.removeValue(forKey: id) else { return 0 }
        loop.httpConnections[id] = nil
        return LWS.writeHTTPResponse(wsi, response) ? 0 : -1
    }

    /// A refused upgrade, head and body in one write of our own (lws would write `HTTP/1.0` at
    /// this point, before it has taken the request's version); lws closes the connection after.
    private func writeRefusal(_ wsi: OpaquePointer, _ response: HTTPResponse, extraHeaders: [(name: String, value: String)]) {
        _ = LWS.writeFinalHTTP(wsi, Array((response.head(extraHeaders: extraHeaders) + response.body).utf8))
    }
}
