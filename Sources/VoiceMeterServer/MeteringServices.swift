import MeteringCore
import VoiceMeterDomain
import VoiceMeterIngress
import VoiceMeterLedger
import VoiceMeterMetering
import VoiceMeterStore
import WebSocketTransport

/// The services metering uses, and the way back to the clients.
final class MeteringServices: MeteringEnvironment {
    let prices: PriceBookWatcher
    let writers: LedgerWriters
    let backpressure: IngressBackpressure
    let registry: CallRegistry
    let router: CallRouter
    let metering: MeteringSettings
    let grantHolder: String
    let clock: any MeteringClock
    let metrics: ServerMetrics
    private let clients: WebSocketServer

    init(prices: PriceBookWatcher, writers: LedgerWriters, backpressure: IngressBackpressure, registry: CallRegistry, router: CallRouter,
         settings: MeteringSettings, grantHolder: String, clock: any MeteringClock, metrics: ServerMetrics, clients: WebSocketServer) {
        self.prices = prices
        self.writers = writers
        self.backpressure = backpressure
        self.registry = registry
        self.router = router
        self.metering = settings
        self.grantHolder = grantHolder
        self.clock = clock
        self.metrics = metrics
        self.clients = clients
    }

    func send(_ message: ServerMessage, to connection: ConnectionID) {
        metrics.sent(message)
        clients.send(message, to: connection)
    }
}
