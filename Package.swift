// swift-tools-version: 6.0
// VoiceMeter: real-time cost metering for live voice-AI calls.
//
// Module map (pure logic inside, I/O at the edges):
//   VoiceMeterDomain      pure domain: exact money, pricing, budgets, call ledger, protocol codec (no I/O)
//   MeteringCore          pure metering state machine: admission, acks, budgets, call lifecycle (no I/O)
//   PostgresClient        libpq behind small Swift types (one owner per connection)
//   VoiceMeterCrypto      OpenSSL: SHA-256, random tokens, constant-time compare
//   EmbeddedPostgres      a private PostgreSQL cluster started with initdb/pg_ctl
//   VoiceMeterDatabase    which database a command uses: the URL given, else the embedded cluster
//   VoiceMeterStore       the schema's tables as Swift: migrations, tokens, prices
//   WebSocketTransport    libwebsockets server and client on their own service threads; carries bytes
//   VoiceMeterLedger      the ledger writers (batched COPY commits, acks after commit) and the rollup folder
//   VoiceMeterMetering    the metering shards (MeteringCore's executors), call routing and registry, the clock
//   VoiceMeterIngress     the protocol over the listener: tokens, each connection's session, messages to metering
//   VoiceMeterFinanceAPI  the finance read API and dashboard over HTTP
//   VoiceMeterServer      the composition root: builds and wires the above, runs them as one ServiceGroup;
//                         settings, readiness, HTTP routes
//   VoiceMeterClient      the protocol's client for Swift pipelines (reconnect, resend, events)
//   VoiceMeterSimulation  simulated calls, scenarios, reports and verification (Simulators/)
//   MeteringSimulation    deterministic simulation of metering cores over a simulated ledger (Simulators/)
//   voicemeter            the command-line tool and composition root
//   C*                    system libraries and one C shim for macros Swift cannot import
import PackageDescription

let package = Package(
    name: "voicemeter",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "voicemeter", targets: ["voicemeter"]),
        .executable(name: "voicemeter-bench", targets: ["voicemeter-bench"]),
        .executable(name: "voicemeter-sim", targets: ["voicemeter-sim"]),
        .library(name: "VoiceMeterClient", targets: ["VoiceMeterClient"]),
        .library(name: "VoiceMeterDomain", targets: ["VoiceMeterDomain"]),
        .library(name: "PostgresClient", targets: ["PostgresClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
    ],
    targets: [
        // MARK: C libraries from Debian
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .systemLibrary(
            name: "CLibWebSockets",
            pkgConfig: "libwebsockets",
            providers: [.apt(["libwebsockets-dev"])]
        ),
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .target(
            name: "CVoiceMeterShims",
            dependencies: ["CLibWebSockets", "COpenSSL"],
            // libev (Debian `libev-dev`, no pkg-config file): the epoll loop under libwebsockets.
            linkerSettings: [.linkedLibrary("ev")]
        ),

        // MARK: Pure domain logic (no I/O)
        .target(name: "VoiceMeterDomain"),
        .target(name: "MeteringCore", dependencies: ["VoiceMeterDomain"]),

        // MARK: Edges
        .target(
            name: "PostgresClient",
            dependencies: ["CLibPQ"]
        ),
        .target(
            name: "WebSocketTransport",
            dependencies: [
                "CLibWebSockets",
                "CVoiceMeterShims",
                "VoiceMeterDomain",
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .target(
            name: "VoiceMeterCrypto",
            dependencies: ["COpenSSL", "VoiceMeterDomain"]
        ),
        .target(
            name: "EmbeddedPostgres",
            dependencies: [
                "PostgresClient",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "VoiceMeterStore",
            dependencies: [
                "VoiceMeterDomain",
                "PostgresClient",
                "VoiceMeterCrypto",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Which database a command uses: the URL given, else the embedded cluster (for the
        // command-line tools; the server library takes its database from its caller).
        .target(
            name: "VoiceMeterDatabase",
            dependencies: ["EmbeddedPostgres", "PostgresClient", "VoiceMeterStore"]
        ),

        // MARK: The server: ledger, metering, finance API, and the composition root
        .target(
            name: "VoiceMeterLedger",
            dependencies: [
                "VoiceMeterDomain",
                "VoiceMeterStore",
                "PostgresClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "VoiceMeterMetering",
            dependencies: [
                "MeteringCore",
                "VoiceMeterDomain",
                "VoiceMeterStore",
                "VoiceMeterCrypto",
                "VoiceMeterLedger",
                "PostgresClient",
                "WebSocketTransport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "VoiceMeterFinanceAPI",
            dependencies: ["VoiceMeterDomain", "VoiceMeterStore", "PostgresClient", "WebSocketTransport"]
        ),
        .target(
            name: "VoiceMeterIngress",
            dependencies: [
                "MeteringCore",
                "VoiceMeterDomain",
                "VoiceMeterStore",
                "VoiceMeterCrypto",
                "VoiceMeterLedger",
                "VoiceMeterMetering",
                "PostgresClient",
                "WebSocketTransport",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "VoiceMeterServer",
            dependencies: [
                "MeteringCore",
                "VoiceMeterDomain",
                "VoiceMeterStore",
                "VoiceMeterLedger",
                "VoiceMeterMetering",
                "VoiceMeterIngress",
                "VoiceMeterFinanceAPI",
                "PostgresClient",
                "WebSocketTransport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "VoiceMeterClient",
            dependencies: [
                "VoiceMeterDomain",
                "WebSocketTransport",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "OrderedCollections", package: "swift-collections"),
            ]
        ),
        .executableTarget(
            name: "voicemeter",
            dependencies: [
                "VoiceMeterDomain",
                "VoiceMeterStore",
                "VoiceMeterServer",
                "VoiceMeterSimulation",
                "VoiceMeterDatabase",
                "EmbeddedPostgres",
                "PostgresClient",
                "WebSocketTransport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // MARK: Simulators and benchmarks
        .target(
            name: "VoiceMeterSimulation",
            dependencies: [
                "VoiceMeterClient",
                "VoiceMeterDomain",
                "VoiceMeterServer",
                "VoiceMeterStore",
                "PostgresClient",
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Simulators/VoiceMeterSimulation"
        ),
        .target(
            name: "MeteringSimulation",
            dependencies: ["MeteringCore", "VoiceMeterDomain"],
            path: "Simulators/MeteringSimulation"
        ),
        .executableTarget(
            name: "voicemeter-sim",
            dependencies: [
                "MeteringSimulation",
                "VoiceMeterSimulation",
                "VoiceMeterDatabase",
                "VoiceMeterClient",
                "VoiceMeterDomain",
                "VoiceMeterServer",
                "PostgresClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Simulators/VoiceMeterSim"
        ),
        .executableTarget(
            name: "voicemeter-bench",
            dependencies: [
                "VoiceMeterDomain",
                "VoiceMeterSimulation",
                "VoiceMeterStore",
                "VoiceMeterServer",
                "VoiceMeterCrypto",
                "VoiceMeterDatabase",
                "VoiceMeterLedger",
                "EmbeddedPostgres",
                "PostgresClient",
                "WebSocketTransport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Simulators/VoiceMeterBench"
        ),

        // MARK: Test support and tests
        .target(
            name: "VoiceMeterTestSupport",
            dependencies: ["PostgresClient", "EmbeddedPostgres", "VoiceMeterStore", "WebSocketTransport"]
        ),
        .testTarget(
            name: "VoiceMeterDomainTests",
            dependencies: ["VoiceMeterDomain"]
        ),
        .testTarget(
            name: "MeteringCoreTests",
            dependencies: ["MeteringCore", "MeteringSimulation", "VoiceMeterDomain"]
        ),
        .testTarget(
            name: "PostgresClientTests",
            dependencies: ["PostgresClient", "VoiceMeterTestSupport", "EmbeddedPostgres"]
        ),
        .testTarget(
            name: "VoiceMeterStoreTests",
            dependencies: ["VoiceMeterStore", "VoiceMeterTestSupport", "VoiceMeterCrypto", "PostgresClient"]
        ),
        .testTarget(
            name: "WebSocketTransportTests",
            dependencies: ["WebSocketTransport", "VoiceMeterDomain", "EmbeddedPostgres", "VoiceMeterTestSupport"]
        ),
        .testTarget(
            name: "VoiceMeterServerTests",
            dependencies: ["VoiceMeterServer", "VoiceMeterMetering", "VoiceMeterDatabase", "VoiceMeterStore", "VoiceMeterDomain", "WebSocketTransport", "VoiceMeterTestSupport",
                           "PostgresClient", "EmbeddedPostgres"]
        ),
        .testTarget(
            name: "VoiceMeterSimulationTests",
            dependencies: ["VoiceMeterSimulation", "VoiceMeterDomain", "VoiceMeterTestSupport", "PostgresClient",
                           .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "CBindingsTests",
            dependencies: ["CVoiceMeterShims", "CLibWebSockets", "COpenSSL"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
