import PostgresClient
import Testing
import VoiceMeterCrypto
import VoiceMeterStore
import VoiceMeterTestSupport

@Suite("Bearer tokens")
struct TokenStoreTests {
    let connection: PostgresConnection
    let store: TokenStore

    init() throws {
        connection = try PostgresConnection(try TestPostgres.migratedDatabase())
        store = TokenStore(connection: connection)
    }

    @Test("a created token authenticates, and only its digest is stored")
    func createAndAuthenticate() throws {
        let secret = try store.create(name: "pipeline-1", kind: .ingest)
        #expect(secret.hasPrefix("vmi_"))
        #expect(secret.count == 4 + 43)
        #expect(try store.authenticate(secret)?.name == "pipeline-1")
        #expect(try store.authenticate(secret)?.kind == .ingest)
        #expect(try store.authenticate(secret + "x") == nil)

        let stored = try connection.query("SELECT row_to_json(t)::text AS everything FROM ingest_tokens t").single()
        let everything: String = try stored.decode("everything")
        #expect(!everything.contains(String(secret.dropFirst(8))))
        let digest = try connection.query("SELECT token_hash FROM ingest_tokens").single().decode("token_hash", as: PostgresBytes.self)
        #expect(digest.bytes == SHA256.digest(secret))
    }

    @Test("a revoked token no longer authenticates; revoking twice says so")
    func revoke() throws {
        let secret = try store.create(name: "old", kind: .ingest)
        try store.revoke(name: "old")
        #expect(try store.authenticate(secret) == nil)
        let again = #expect(throws: TokenError.self) { try store.revoke(name: "old") }
        #expect(again?.description.contains("already revoked") == true)
        let missing = #expect(throws: TokenError.self) { try store.revoke(name: "never-made") }
        #expect(missing?.description.contains("tokens list") == true)
        #expect(try store.list().map(\.isActive) == [false])
    }

    @Test("names are unique and validated")
    func names() throws {
        _ = try store.create(name: "finance-bi", kind: .finance)
        let duplicate = #expect(throws: TokenError.self) { try store.create(name: "finance-bi", kind: .ingest) }
        #expect(duplicate?.description.contains("already exists") == true)
        let invalid = #expect(throws: TokenError.self) { try store.create(name: "has space", kind: .ingest) }
        #expect(invalid?.description.contains("not allowed") == true)
        #expect(try store.list().map(\.kind) == [.finance])
    }

    @Test("two tokens are never the same")
    func tokensAreRandom() {
        let tokens = Set((0..<1_000).map { _ in SecretToken.generate(prefix: "vmi") })
        #expect(tokens.count == 1_000)
    }
}
