import EmbeddedPostgres
import Foundation
import Testing
import VoiceMeterTestSupport
import WebSocketTransport

/// A throwaway CA and a server certificate for 127.0.0.1, made with the openssl command.
struct TestCertificates {
    let directory: String
    var authority: String { directory + "/ca.pem" }
    var certificate: String { directory + "/server.pem" }
    var privateKey: String { directory + "/server.key" }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("voicemeter-tls-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n".write(toFile: directory + "/ext.cnf", atomically: true, encoding: .utf8)
        let openssl = try #require(ProcessRunner.find("openssl"))
        let steps: [[String]] = [
            ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "1", "-subj", "/CN=VoiceMeter Test CA"],
            ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem",
             "-days", "1", "-extfile", "ext.cnf"],
        ]
        for step in steps {
            let arguments = step.map { $0.hasSuffix(".key") || $0.hasSuffix(".pem") || $0.hasSuffix(".csr") || $0.hasSuffix(".cnf") ? directory + "/" + $0 : $0 }
            let result = try ProcessRunner.run(openssl, arguments)
            try #require(result.exitCode == 0, "openssl failed: \(result.output)")
        }
    }
}

@Suite("TLS", .serialized)
struct TLSTests {
    @Test("a client that verifies the test CA streams over wss://")
    func verifiedClient() throws {
        let certificates = try TestCertificates()
        let (server, _) = try AckingDelegate.start {
            $0.tlsCertificatePath = certificates.certificate
            $0.tlsPrivateKeyPath = certificates.privateKey
        }
        defer { server.shutdown() }
        let recorder = ClientRecorder()
        let client = try WebSocketClient(certificateAuthorityPath: certificates.authority) { recorder.record($0, $1) }
        defer { client.shutdown() }
        var endpoint = ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: "good-token")
        endpoint.useTLS = true
        let connection = client.connect(to: endpoint)
        client.send(usageFrame(seq: 1), on: connection)
        #expect(recorder.wait { recorder.messages(of: connection) == [#"{"type":"ack","call_id":"CA1","seq":1}"#] })
    }

    @Test("TLS 1.0 and 1.1 are refused; TLS 1.2 is accepted", arguments: [("-tls1", false), ("-tls1_1", false), ("-tls1_2", true)])
    func protocolVersions(flag: String, accepted: Bool) throws {
        let certificates = try TestCertificates()
        let (server, _) = try AckingDelegate.start {
            $0.tlsCertificatePath = certificates.certificate
            $0.tlsPrivateKeyPath = certificates.privateKey
        }
        defer { server.shutdown() }
        let openssl = try #require(ProcessRunner.find("openssl"))
        // SECLEVEL=0 makes the client willing to speak old versions, so a refusal is the server's.
        let result = try ProcessRunner.run(openssl, [
            "s_client", "-connect", "127.0.0.1:\(server.port)", flag, "-cipher", "DEFAULT:@SECLEVEL=0",
            "-CAfile", certificates.authority, "-verify_return_error", "-brief",
        ])
        #expect((result.exitCode == 0) == accepted, "\(result.output)")
    }
}
