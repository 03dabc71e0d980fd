import CLibWebSockets
import CVoiceMeterShims
import Glibc
import Synchronization

/// How a context is created: what the server and the client each set.
struct ContextSettings {
    var protocolName: String
    var callback: @convention(c) (OpaquePointer?, lws_callback_reasons, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, Int) -> Int32
    /// The port to listen on; `nil` for a client-only context.
    var port: Int?
    /// The address to bind exactly.
    var interface: String?
    /// The object the callback finds with `LWS.owner(of:as:)`.
    var owner: UnsafeMutableRawPointer
    var headerTimeoutSeconds: Int?
    /// PEM files of a TLS server (1.2 and newer only, no compression).
    var certificatePath: String?
    var privateKeyPath: String?
    /// PEM file of the CA a client trusts; set, a client context loads TLS.
    var certificateAuthorityPath: String?
    var isClient: Bool { port == nil }
}

/// A created context on its service thread.
struct ServedContext {
    let pointer: OpaquePointer
    /// The epoll loop it runs on (`nil`: lws's poll() loop).
    let eventLoop: EventLoop?

    /// The port the default vhost listens on.
    var listenPort: Int { Int(lws_get_vhost_listen_port(lws_get_vhost_by_name(pointer, "default"))) }

    /// Serves until `shouldStop` holds: on the epoll loop, until a callback stops it; on poll(),
    /// checking after every service round.
    func serve(until shouldStop: () -> Bool) {
        if let eventLoop {
            eventLoop.run()
        } else {
            while lws_service(pointer, 0) >= 0 && !shouldStop() {}
        }
    }
}

/// Wakes a context's service thread from any thread (`lws_cancel_service`, the one thread-safe
/// lws call): the loop then runs `LWS_CALLBACK_EVENT_WAIT_CANCELLED`.
final class ServiceWake: Sendable {
    /// The context's address while it exists, else 0.
    private let context = Mutex<Int>(0)

    func bind(_ served: ServedContext) { context.withLock { $0 = Int(bitPattern: served.pointer) } }
    func unbind() { context.withLock { $0 = 0 } }

    func wake() {
        context.withLock { address in
            if let context = OpaquePointer(bitPattern: address) { lws_cancel_service(context) }
        }
    }
}

extension LWS {
    /// Creates a context, hands it to `body` on this thread, and destroys it when `body` returns;
    /// `body` gets `nil` when lws cannot create it (address in use, bad TLS files).
    static func withContext(_ settings: ContextSettings, _ body: (ServedContext?) -> Void) {
        // lws keeps pointers to these strings for the context's life.
        var strings: [UnsafeMutablePointer<CChar>] = []
        func retained(_ text: String) -> UnsafePointer<CChar> {
            let copy = strdup(text)!
            strings.append(copy)
            return UnsafePointer(copy)
        }
        let protocols = UnsafeMutablePointer<lws_protocols>.allocate(capacity: 2)
        protocols.initialize(repeating: lws_protocols(), count: 2)
        defer {
            strings.forEach { free($0) }
            protocols.deallocate()
        }
        protocols[0].name = retained(settings.protocolName)
        protocols[0].callback = settings.callback
        protocols[0].per_session_data_size = 0

        var info = lws_context_creation_info()
        info.port = Int32(settings.port ?? -1)  // -1: CONTEXT_PORT_NO_LISTEN, a client only
        info.protocols = UnsafePointer(protocols)
        info.gid = -1
        info.uid = -1
        info.user = settings.owner
        if let interface = settings.interface {
            info.iface = retained(interface)
            // Bind exactly the address asked for: with IPv6 on, lws binds every interface.
            if !interface.contains(":") { info.options |= UInt64(LWS_SERVER_OPTION_DISABLE_IPV6) }
        }
        if let seconds = settings.headerTimeoutSeconds {
            info.timeout_secs = UInt32(seconds)
            info.keepalive_timeout = Int32(seconds)
            info.timeout_secs_ah_idle = UInt32(seconds)
        }
        info.retry_and_idle_policy = noValidityTimers
        // No fd_limit_per_thread: with it lws finds a socket's connection by a linear scan of
        // every connection; without, by index into a table sized by the open-file limit.
        if let certificate = settings.certificatePath, let key = settings.privateKeyPath {
            info.options |= UInt64(LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT)
            info.ssl_cert_filepath = retained(certificate)
            info.ssl_private_key_filepath = retained(key)
            info.ssl_options_set = CVoiceMeterShims_tls_legacy_protocol_options()
        }
        if settings.isClient {
            info.options |= UInt64(LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT)
            if let authority = settings.certificateAuthorityPath { info.client_ssl_ca_filepath = retained(authority) }
        }
        let (pointer, eventLoop) = createContext(&info)
        guard let pointer else { return body(nil) }
        body(ServedContext(pointer: pointer, eventLoop: eventLoop))
        // The epoll loop outlives the context that runs on it.
        withExtendedLifetime(eventLoop) { lws_context_destroy(pointer) }
    }

    /// Hardens a TLS server's SSL_CTX (TLS 1.2 and newer only, no compression); `false` on failure.
    static func hardenTLS(_ sslContext: UnsafeMutableRawPointer) -> Bool {
        CVoiceMeterShims_harden_tls_context(OpaquePointer(sslContext)) == 1
    }
}
