import CLibWebSockets
import CVoiceMeterShims
import Foundation
import Synchronization
import VoiceMeterDomain

/// Identifies one WebSocket connection for as long as it is open.
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int
    public var description: String { "conn-\(rawValue)" }

    public init(rawValue: Int) {
        self.rawValue = rawValue
    }
}

/// What the server knows of a WebSocket upgrade request when deciding whether to accept it.
public struct UpgradeRequest: Sendable {
    public var peer: String
    /// The token of an `Authorization: Bearer …` header.
    public var bearerToken: String?
    public var origin: String?
}

public enum UpgradeDecision: Sendable, Equatable {
    case accept
    /// Refuse with this HTTP status before any WebSocket exists.
    case refuse(status: Int, reason: String)
}

/// A plain HTTP request on the same listener (health checks, later metrics and the read API).
public struct HTTPRequest: Sendable {
    /// `GET`, `POST`, … as sent.
    public var method: String
    public var path: String
    public var query: String?
    public var bearerToken: String?
    public var accept: String?
    /// The `Cookie` header, as sent.
    public var cookie: String?
}

/// A response header beyond the status, content type and length.
public struct HTTPHeader: Sendable, Equatable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

public struct HTTPResponse: Sendable, Equatable {
    public var status: Int
    public var contentType: String
    public var body: String
    public var headers: [HTTPHeader]

    public init(status: Int, contentType: String = "application/json", body: String, headers: [HTTPHeader] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }

    /// The status line and headers of this response as HTTP/1.1, for answers written before lws
    /// has parsed the request's version (a refused upgrade: lws would say `HTTP/1.0`, which
    /// strict clients such as Python's `websockets` do not accept). Always `Connection: close`.
    func head(extraHeaders: [(name: String, value: String)]) -> String {
        var lines = ["HTTP/1.1 \(status) \(Self.reasonPhrase(status))",
                     "Content-Type: \(contentType)",
                     "Content-Length: \(body.utf8.count)",
                     "Connection: close"]
        lines += extraHeaders.map { "\($0.name): \($0.value)" }
        return lines.joined(separator: "\r\n") + "\r\n\r\n"
    }

    /// RFC 9110's reason phrases for the statuses an upgrade is refused with.
    static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 429: "Too Many Requests"
        case 503: "Service Unavailable"
        default: "Refused"
        }
    }
}

/// The application side of the server. Called on the service thread: every method must return
/// quickly (hand work to other queues) and must not call back into lws.
public protocol WebSocketServerDelegate: AnyObject, Sendable {
    func authorize(_ request: UpgradeRequest) -> UpgradeDecision
    /// A connection `authorize` accepted is open; `request` is what it was accepted on.
    func connectionOpened(_ connection: ConnectionID, request: UpgradeRequest)
    /// Returns whether to keep reading this connection; `false` stops reading its socket
    /// (backpressure) until `resumeAllPaused`.
    func received(_ message: ClientMessage, from connection: ConnectionID) -> Bool
    func connectionClosed(_ connection: ConnectionID)
    /// A message was refused by the protocol layer (malformed, too large, rate limited). Returns
    /// whether the delegate answers it itself (later, through `send`); otherwise the sender gets
    /// this error at once, naming the call and seq when the message had them. The default
    /// answers nothing itself.
    func rejected(_ error: ProtocolError, from connection: ConnectionID) -> Bool
    /// Answers a plain HTTP request by calling `reply` once, at once or later from any thread
    /// (a database query must not block the service thread).
    func respond(to request: HTTPRequest, reply: @escaping @Sendable (HTTPResponse) -> Void)
}

extension WebSocketServerDelegate {
    public func rejected(_ error: ProtocolError, from connection: ConnectionID) -> Bool { false }
}

public struct WebSocketServerConfiguration: Sendable {
    /// The address to bind exactly (no other interface): an IPv4 address, an IPv6 literal, or `0.0.0.0`.
    public var host = "127.0.0.1"
    /// 0 picks a free port (tests); `WebSocketServer.port` tells which.
    public var port = 8787
    public var path = "/v1/stream"
    public var subprotocol = "voicemeter.v1"
    /// PEM files; both set means TLS (1.2 and newer only, no compression).
    public var tlsCertificatePath: String?
    public var tlsPrivateKeyPath: String?
    /// When set, upgrades whose `Origin` is not listed are refused with 403.
    public var allowedOrigins: [String]?
    public var limits = IngressLimits()

    public init() {}
}

public struct WebSocketServerError: Error, CustomStringConvertible {
    public var description: String
}

/// A libwebsockets server on one service thread that owns the lws context.
///
/// No other thread touches lws except through `lws_cancel_service`: `send`, `pauseReceiving`,
/// `resumeReceiving` and `close` leave work in `Outboxes` and wake the loop, which performs it on
/// `LWS_CALLBACK_EVENT_WAIT_CANCELLED` and writable callbacks (one `lws_write` each).
public final class WebSocketServer: Sendable {
    public let configuration: WebSocketServerConfiguration
    let delegate: any WebSocketServerDelegate
    let outboxes: Outboxes
    let loop: ServiceLoop
    private let startup = Mutex<(port: Int?, error: String?)>((nil, nil))
    private let finished = DispatchSemaphore(value: 0)

    public init(configuration: WebSocketServerConfiguration, delegate: any WebSocketServerDelegate) {
        self.configuration = configuration
        self.delegate = delegate
        self.outboxes = Outboxes(capacityPerConnection: configuration.limits.outboxMessagesPerConnectionMax)
        self.loop = ServiceLoop(limits: configuration.limits)
    }

    /// The port the server listens on (after `start`).
    public var port: Int { startup.withLock { $0.port ?? 0 } }

    /// Creates the context on a new service thread and returns once it listens (or failed to).
    public func start() throws {
        let ready = DispatchSemaphore(value: 0)
        let thread = Thread { [self] in
            self.run(signalling: ready)
        }
        thread.name = "voicemeter.lws"
        thread.stackSize = 1 << 20
        thread.start()
        ready.wait()
        if let error = startup.withLock({ $0.error }) { throw WebSocketServerError(description: error) }
    }

    /// Queues a message for a connection; dropped silently if the connection is gone. Budget
    /// warnings and cutoffs overtake queued acknowledgements (`ServerMessage.isUrgent`): the
    /// pipeline must act on them now; every other message keeps its order.
    public func send(_ message: ServerMessage, to connection: ConnectionID) {
        let order: Outboxes.Order = if message.isUrgent { .urgent } else if case .ack = message { .overtakable } else { .inOrder }
        if outboxes.enqueue(Array(message.json.utf8), for: connection.rawValue, order: order) == true { wake() }
    }

    /// First step of a graceful stop: refuse new upgrades and stop reading every connection, so
    /// nothing new arrives while in-flight work is committed and acknowledged.
    /// Returns once the service thread has applied it.
    public func stopReceiving() {
        loop.refusingUpgrades.store(true, ordering: .relaxed)
        if outboxes.post(.stopReceivingAll) { wake() }
        _ = loop.receivingStopped.wait(timeout: .now() + 2)
    }

    /// Reads again from every connection paused by the delegate; cheap when none is paused.
    public func resumeAllPaused() {
        guard loop.pausedCount.load(ordering: .relaxed) > 0 else { return }
        if outboxes.post(.resumeAllPaused) { wake() }
    }

    /// Closes a connection with a WebSocket close code, after the messages already queued for it.
    public func close(_ connection: ConnectionID, code: UInt16, reason: String) {
        if outboxes.post(.close(connection.rawValue, code: code, reason: reason)) { wake() }
    }

    /// Closes every connection with 1001 (going away), stops listening and returns when the service
    /// thread has finished, at the latest after `drainSeconds`.
    public func shutdown(drainSeconds: Double = 5) {
        loop.shutdownDeadline.withLock { $0 = Date().addingTimeInterval(drainSeconds) }
        _ = outboxes.requestStop()
        // The loop sleeps until an event; wake it every 50 ms so it notices the deadline.
        repeat { lws_cancel_service_if_running() } while finished.wait(timeout: .now() + .milliseconds(50)) == .timedOut
    }

    /// Stopping and every connection closed, or the drain deadline passed.
    func shouldStopServing() -> Bool {
        guard outboxes.isStopping else { return false }
        let deadline = loop.shutdownDeadline.withLock { $0 } ?? Date()
        return loop.connections.isEmpty || Date() >= deadline
    }

    func lws_cancel_service_if_running() {
        loop.context.withLock { address in
            if let context = OpaquePointer(bitPattern: address) { lws_cancel_service(context) }
        }
    }

    private func wake() { lws_cancel_service_if_running() }

    // MARK: The service thread

    private func run(signalling ready: DispatchSemaphore) {
        LWS.quietLogging()
        let protocolName = strdup(configuration.subprotocol)!
        let protocols = UnsafeMutablePointer<lws_protocols>.allocate(capacity: 2)
        protocols.initialize(repeating: lws_protocols(), count: 2)
        protocols[0].name = UnsafePointer(protocolName)
        protocols[0].callback = serverCallback
        protocols[0].per_session_data_size = 0
        let host = strdup(configuration.host)!
        let certificate = configuration.tlsCertificatePath.map { strdup($0)! }
        let privateKey = configuration.tlsPrivateKeyPath.map { strdup($0)! }
        defer {
            free(protocolName)
            free(host)
            certificate.map { free($0) }
            privateKey.map { free($0) }
            protocols.deallocate()
        }

        let context: OpaquePointer? = {
            var info = lws_context_creation_info()
            info.port = Int32(configuration.port)
            info.iface = UnsafePointer(host)
            info.protocols = UnsafePointer(protocols)
            info.gid = -1
            info.uid = -1
            info.user = Unmanaged.passUnretained(self).toOpaque()
            info.timeout_secs = UInt32(configuration.limits.headerTimeoutSeconds)
            info.keepalive_timeout = Int32(configuration.limits.headerTimeoutSeconds)
            info.timeout_secs_ah_idle = UInt32(configuration.limits.headerTimeoutSeconds)
            info.retry_and_idle_policy = LWS.noValidityTimers
            // No fd_limit_per_thread: with it lws finds a socket's connection by a linear scan of
            // every connection; without, by index into a table sized by the open-file limit.
            // Bind exactly the address asked for: with IPv6 on, lws binds every interface.
            if !configuration.host.contains(":") { info.options |= UInt64(LWS_SERVER_OPTION_DISABLE_IPV6) }
            if let certificate, let privateKey {
                info.options |= UInt64(LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT)
                info.ssl_cert_filepath = UnsafePointer(certificate)
                info.ssl_private_key_filepath = UnsafePointer(privateKey)
                info.ssl_options_set = CVoiceMeterShims_tls_legacy_protocol_options()
            }
            let (context, eventLoop) = LWS.createContext(&info)
            loop.eventLoop = eventLoop
            return context
        }()
        guard let context else {
            startup.withLock { $0.error = "cannot listen on \(configuration.host):\(configuration.port) (address in use, not local, or bad TLS files)" }
            ready.signal()
            finished.signal()
            return
        }
        loop.bind(to: Thread.current)
        loop.context.withLock { $0 = Int(bitPattern: context) }
        let port = Int(lws_get_vhost_listen_port(lws_get_vhost_by_name(context, "default")))
        startup.withLock { $0.port = port }
        ready.signal()
        let heartbeat = LWS.startHeartbeat { [weak self] in self?.lws_cancel_service_if_running() }
        defer { heartbeat.cancel() }

        LWS.serve(context, on: loop.eventLoop, until: shouldStopServing)
        loop.context.withLock { $0 = 0 }
        lws_context_destroy(context)
        loop.eventLoop = nil
        finished.signal()
    }
}

/// State that only the service thread touches, reached from the C callback.
///
/// `@unchecked Sendable` is safe because every mutable property except the two `Mutex`es is read
/// and written only on the service thread: the C callback runs there, and `assertOnServiceThread`
/// checks it in debug builds. Other threads only take the mutex-guarded `context` (to wake the loop)
/// and `shutdownDeadline`.
final class ServiceLoop: @unchecked Sendable {
    struct Connection {
        var wsi: OpaquePointer
        var peer: String
        var session: IngressSession
        var pendingClose: (code: UInt16, reason: String)?
        var paused = false
        /// When anything last arrived from the peer (a message or a pong).
        var lastHeardNanoseconds: UInt64
        /// A ping is to be sent at the next writable callback.
        var pingDue = false
        /// When a ping was asked for; cleared by anything heard from the peer.
        var pingSentNanoseconds: UInt64?

        /// Something arrived from the peer: it is alive, no ping is owed.
        mutating func noteHeard(at now: UInt64) {
            lastHeardNanoseconds = now
            pingSentNanoseconds = nil
            pingDue = false
        }
    }

    let limits: IngressLimits
    /// The lws context's address (0 when none), for `lws_cancel_service` from other threads.
    let context = Mutex<Int>(0)
    let shutdownDeadline = Mutex<Date?>(nil)
    var connections: [Int: Connection] = [:]
    var connectionsPerPeer: [String: Int] = [:]
    /// HTTP requests waiting for their answer, by connection id.
    var httpConnections: [Int: OpaquePointer] = [:]
    /// HTTP responses waiting for their connection to become writable, by connection id.
    var pendingHTTP: [Int: HTTPResponse] = [:]
    var nextID = 0
    var closingAll = false
    /// The epoll loop the context runs on (`nil`: lws's poll() loop).
    var eventLoop: EventLoop?
    /// When idle connections were last looked for.
    var idleCheckedNanoseconds: UInt64 = 0
    /// How many connections are paused, readable from any thread to skip needless wakes.
    let pausedCount = Atomic<Int>(0)
    /// Set by `stopReceiving`: upgrades are refused with 503.
    let refusingUpgrades = Atomic<Bool>(false)
    /// Signalled by the service thread once every connection has stopped being read.
    let receivingStopped = DispatchSemaphore(value: 0)
    private var serviceThread: Thread?

    init(limits: IngressLimits) {
        self.limits = limits
    }

    func bind(to thread: Thread) { serviceThread = thread }

    func assertOnServiceThread() {
        assert(serviceThread == nil || Thread.current == serviceThread, "lws state touched off the service thread")
    }

    func allocateID() -> Int {
        nextID += 1
        return nextID
    }
}
