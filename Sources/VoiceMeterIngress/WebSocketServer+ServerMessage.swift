import VoiceMeterDomain
import WebSocketTransport

extension WebSocketServer {
    /// Sends a protocol message as its JSON text. Budget warnings and cutoffs overtake queued
    /// acknowledgements (`ServerMessage.isUrgent`: the pipeline must act on them now); an
    /// acknowledgement may be overtaken (a later one covers it); every other message keeps its order.
    package func send(_ message: ServerMessage, to connection: ConnectionID) {
        let order: OutboundOrder = if message.isUrgent { .urgent } else if case .ack = message { .overtakable } else { .inOrder }
        send(Array(message.json.utf8), to: connection, order: order)
    }
}
