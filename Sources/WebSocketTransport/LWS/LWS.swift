import CLibWebSockets
import CVoiceMeterShims
import Glibc

/// The one wrapper over the libwebsockets C API: every lws call of the transport is made here
/// (this file and its extensions in LWS/). All of it runs on a context's service thread, except
/// `ServiceWake.wake`, the one call lws allows from other threads.
enum LWS {
    /// Bytes of headroom lws_write needs before every payload.
    static let pre = CVoiceMeterShims_LWS_PRE()

    /// Errors only: lws is chatty at its default level.
    static func quietLogging() {
        lws_set_log_level(Int32(LLL_ERR), nil)
    }

    /// A request header's value, or `nil` when absent.
    static func header(_ wsi: OpaquePointer, _ token: lws_token_indexes) -> String? {
        let length = Int(lws_hdr_total_length(wsi, token))
        guard length > 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: length + 1)
        guard lws_hdr_copy(wsi, &buffer, Int32(buffer.count), token) >= 0 else { return nil }
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The request's method: lws keeps the URI in a header named for it.
    static func method(_ wsi: OpaquePointer) -> String {
        let methods: [(lws_token_indexes, String)] = [(WSI_TOKEN_GET_URI, "GET"), (WSI_TOKEN_POST_URI, "POST"), (WSI_TOKEN_PUT_URI, "PUT"),
                                                      (WSI_TOKEN_PATCH_URI, "PATCH"), (WSI_TOKEN_DELETE_URI, "DELETE"),
                                                      (WSI_TOKEN_OPTIONS_URI, "OPTIONS"), (WSI_TOKEN_HEAD_URI, "HEAD")]
        return methods.first { lws_hdr_total_length(wsi, $0.0) > 0 }?.1 ?? "UNKNOWN"
    }

    /// The query string's arguments (`a=1&b=2`): lws keeps each one as a separate header fragment.
    static func queryString(_ wsi: OpaquePointer) -> String? {
        var arguments: [String] = []
        var buffer = [CChar](repeating: 0, count: 1_024)
        var index: Int32 = 0
        while lws_hdr_copy_fragment(wsi, &buffer, Int32(buffer.count), WSI_TOKEN_HTTP_URI_ARGS, index) > 0 {
            arguments.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
            index += 1
        }
        return arguments.isEmpty ? nil : arguments.joined(separator: "&")
    }

    /// The peer's numeric address.
    static func peerAddress(_ wsi: OpaquePointer) -> String {
        var buffer = [CChar](repeating: 0, count: 128)
        guard lws_get_peer_simple(wsi, &buffer, buffer.count) != nil else { return "unknown" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Bytes of queued messages written per writable callback: one burst, one TCP transmit.
    static let burstBytes = 64 * 1_024

    /// Writes text messages from `next` back to back, up to `burstBytes`, while lws sends each
    /// one whole: once lws had to keep part of a write for later, the burst stops (lws 4.1 would
    /// put the next message on the wire without its frame header) and the rest stays queued for
    /// the next writable callback, which lws holds until its buffer is sent. A burst of several
    /// messages is corked, so it leaves in as few TCP segments as fit instead of one per message.
    /// Returns `nil` when the socket failed, else how many messages were written and whether more
    /// are queued.
    static func writeBurst(_ wsi: OpaquePointer, next: () -> (payload: [UInt8], more: Bool)?) -> (written: Int, more: Bool)? {
        var corked = false
        defer { if corked { _ = setCorked(wsi, false) } }
        // One scratch buffer with lws's headroom: lws_write copies (and, on a client, masks) the
        // payload in place before returning.
        var scratch = [UInt8](repeating: 0, count: pre)
        var (written, bytes, more) = (0, 0, true)
        while more, bytes < burstBytes, lws_partial_buffered(wsi) == 0 {
            guard let message = next() else { return (written, false) }
            more = message.more
            if more && !corked { corked = setCorked(wsi, true) }
            scratch.removeSubrange(pre...)
            scratch.append(contentsOf: message.payload)
            let sent = scratch.withUnsafeMutableBufferPointer { lws_write(wsi, $0.baseAddress! + pre, message.payload.count, LWS_WRITE_TEXT) }
            guard sent >= 0 else { return nil }
            written += 1
            bytes += message.payload.count
        }
        return (written, more)
    }

    /// TCP_CORK on the connection's socket: while set, the kernel holds partial segments, and
    /// clearing it sends what is held.
    private static func setCorked(_ wsi: OpaquePointer, _ on: Bool) -> Bool {
        var value: Int32 = on ? 1 : 0
        return setsockopt(lws_get_socket_fd(wsi), Int32(IPPROTO_TCP), TCP_CORK, &value, socklen_t(MemoryLayout<Int32>.size)) == 0
    }

    /// Sends a ping (no payload); the peer's pong arrives as `LWS_CALLBACK_RECEIVE_PONG`.
    static func writePing(_ wsi: OpaquePointer) -> Bool {
        var buffer = [UInt8](repeating: 0, count: pre)
        return buffer.withUnsafeMutableBufferPointer { lws_write(wsi, $0.baseAddress! + pre, 0, LWS_WRITE_PING) } >= 0
    }

    /// A retry and idle policy with lws's validity timers off. lws keeps one timer per connection
    /// in a sorted list and re-inserts it on every message (linear in the number of connections);
    /// the server finds idle connections by a once-a-second scan instead.
    static var noValidityTimers: UnsafePointer<lws_retry_bo_t> { CVoiceMeterShims_no_validity_timers() }

    /// Sets the close code and reason of the close frame lws sends when the callback returns -1.
    static func setCloseReason(_ wsi: OpaquePointer, code: UInt16, reason: String) {
        var bytes = Array(reason.utf8.prefix(120))
        lws_close_reason(wsi, lws_close_status(rawValue: UInt32(code)), &bytes, bytes.count)
    }

    /// The id stored on a connection, or 0 when none was set.
    static func connectionID(of wsi: OpaquePointer) -> Int {
        Int(bitPattern: lws_get_opaque_user_data(wsi))
    }

    static func setConnectionID(_ id: Int, on wsi: OpaquePointer) {
        lws_set_opaque_user_data(wsi, UnsafeMutableRawPointer(bitPattern: id))
    }

    /// Asks for a writable callback on the connection.
    static func requestWritable(_ wsi: OpaquePointer) {
        lws_callback_on_writable(wsi)
    }

    /// Stops or resumes reading the connection's socket; lws holds back what it already read.
    static func setReceiving(_ wsi: OpaquePointer, _ receiving: Bool) {
        lws_rx_flow_control(wsi, receiving ? 1 : 0)
    }

    /// Whether the bytes of this receive callback end a message (its last fragment, all of it read).
    static func endsMessage(_ wsi: OpaquePointer) -> Bool {
        lws_is_final_fragment(wsi) != 0 && lws_remaining_packet_payload(wsi) == 0
    }

    /// Whether the message being received was sent as binary.
    static func isBinary(_ wsi: OpaquePointer) -> Bool {
        lws_frame_is_binary(wsi) != 0
    }

    /// Drops the connection if its close frame is not out within `seconds`.
    static func closeWithin(_ wsi: OpaquePointer, seconds: Int) {
        lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, Int32(seconds))
    }

    /// Drops the connection at the next service round, without a close handshake.
    static func dropSoon(_ wsi: OpaquePointer) {
        lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC)
    }

    /// The object registered as the context's user (`info.user`) of this connection's context.
    static func owner<Owner: AnyObject>(of wsi: OpaquePointer, as _: Owner.Type) -> Owner? {
        guard let context = lws_get_context(wsi), let owner = lws_context_user(context) else { return nil }
        return Unmanaged<Owner>.fromOpaque(owner).takeUnretainedValue()
    }

    /// The context a connection belongs to.
    static func context(of wsi: OpaquePointer) -> OpaquePointer? {
        lws_get_context(wsi)
    }

    /// Adds a request header while lws builds a client handshake (`cursor` and `end` as lws gave them).
    static func appendHandshakeHeader(_ wsi: OpaquePointer, name: String, value: String,
                                      cursor: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>, end: UnsafeMutablePointer<UInt8>) -> Bool {
        lws_add_http_header_by_name(wsi, name, value, Int32(value.utf8.count), cursor, end) == 0
    }

    /// Starts a client connection; `nil` when lws cannot start it.
    static func connect(_ info: inout lws_client_connect_info) -> OpaquePointer? {
        lws_client_connect_via_info(&info)
    }
}
