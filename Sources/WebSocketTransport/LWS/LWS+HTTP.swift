import CLibWebSockets

extension LWS {
    /// Bounds the wait for an HTTP request's answer: lws closes the connection after `seconds`.
    static func awaitAnswer(_ wsi: OpaquePointer, seconds: Int) {
        lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, Int32(seconds))
    }

    /// Writes a whole HTTP response (status, headers, body) and ends the transaction; `false` when
    /// the connection must be closed.
    static func writeHTTPResponse(_ wsi: OpaquePointer, _ response: HTTPResponse) -> Bool {
        lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0)
        guard writeHTTPHeaders(wsi, response), writeFinalHTTP(wsi, Array(response.body.utf8)) else { return false }
        return lws_http_transaction_completed(wsi) == 0
    }

    private static func writeHTTPHeaders(_ wsi: OpaquePointer, _ response: HTTPResponse) -> Bool {
        var buffer = [UInt8](repeating: 0, count: pre + 2_048)
        return buffer.withUnsafeMutableBufferPointer { storage -> Bool in
            let start = storage.baseAddress! + pre
            let end = storage.baseAddress! + storage.count - 1
            var cursor: UnsafeMutablePointer<UInt8>? = start
            guard lws_add_http_common_headers(wsi, UInt32(response.status), response.contentType,
                                              UInt64(response.body.utf8.count), &cursor, end) == 0 else { return false }
            for header in response.headers {
                let name = Array((header.name.lowercased() + ":").utf8) + [0]  // lws reads the name as a C string
                let value = Array(header.value.utf8)
                guard lws_add_http_header_by_name(wsi, name, value, Int32(value.count), &cursor, end) == 0 else { return false }
            }
            return lws_finalize_write_http_header(wsi, start, &cursor, end) == 0
        }
    }

    /// The last bytes of an HTTP answer, behind the headroom lws_write needs.
    static func writeFinalHTTP(_ wsi: OpaquePointer, _ bytes: [UInt8]) -> Bool {
        var buffer = [UInt8](repeating: 0, count: pre)
        buffer += bytes
        return buffer.withUnsafeMutableBufferPointer { storage in
            lws_write(wsi, storage.baseAddress! + pre, bytes.count, LWS_WRITE_HTTP_FINAL) >= 0
        }
    }
}
