import CLibWebSockets
import COpenSSL
import CVoiceMeterShims
import Testing

@Suite("C bindings")
struct CBindingsTests {
    @Test("the linked libwebsockets is the 4.1 series the server is written for")
    func libwebsocketsVersion() {
        let version = String(cString: lws_get_library_version())
        #expect(version.hasPrefix("4.1."))
    }

    @Test("LWS_PRE leaves room for the largest WebSocket frame header (14 bytes)")
    func lwsPreHeadroom() {
        #expect(CVoiceMeterShims_LWS_PRE() >= 14)
    }

    @Test("a hardened TLS context refuses anything older than TLS 1.2")
    func tlsMinimumVersion() throws {
        let context = try #require(SSL_CTX_new(TLS_server_method()))
        defer { SSL_CTX_free(context) }
        #expect(CVoiceMeterShims_harden_tls_context(context) == 1)
        #expect(SSL_CTX_ctrl(context, SSL_CTRL_GET_MIN_PROTO_VERSION, 0, nil) == TLS1_2_VERSION)
    }
}
