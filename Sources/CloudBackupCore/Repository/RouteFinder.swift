import Foundation

/// Chooses between our REST server and the destination itself, for every command that runs restic.
///
/// The server is used only when it is provably this tool's, serving the job's destination
/// (`ServerIdentity`): something else answering on the port (a web application, a server of another
/// state directory, a server still serving yesterday's destination) must never receive a backup.
/// Going to the destination directly is always correct, only slower, so every doubt goes there, and
/// the log says why.
public enum RouteFinder {
    /// restic commands that delete repository data, which an append-only server refuses.
    static let deletingCommands: Set<String> = ["forget", "prune", "key", "rebuild-index", "repair", "migrate", "tag"]

    /// `deletes`: the job removes data. With RESTIC_REST_APPEND_ONLY the server is append-only (for
    /// external clients), so such jobs, run on the server's own machine, go to the destination directly.
    public static func find(configuration: Configuration, log: Logger, deletes: Bool = false) -> RepositoryRoute {
        let port = configuration.restPort
        let direct = RepositoryRoute.direct(configuration.destination)
        if deletes && configuration.appendOnly {
            log.info("RESTIC_REST_APPEND_ONLY is set, so the REST server refuses deletions: going to the destination directly")
            return direct
        }
        switch RestServerProbe.probe(port: port, credentials: configuration.restCredentials) {
        case .restServer:
            switch ServerIdentity.check(port: port, destination: configuration.destination.rclonePath, stateDirectory: configuration.stateDirectory) {
            case .ours:
                return .restServer(port: port, credentials: configuration.restCredentials)
            case .notOurs(let reason):
                log.warning("a restic REST server answers on 127.0.0.1:\(port), but \(reason): going to the destination directly")
            }
        case .refusedCredentials:
            log.warning("a server on 127.0.0.1:\(port) refused RESTIC_REST_USERNAME/RESTIC_REST_PASSWORD; going to the destination directly")
        case .otherService(let status):
            log.warning("something that is not a restic REST server answers on 127.0.0.1:\(port) (HTTP \(status)); going to the destination directly")
        case .nothing:
            let (record, alive) = ServerRecord.read(stateDirectory: configuration.stateDirectory)
            if alive, let record, record.networkNamespace != Namespaces.network {
                log.info("the REST server runs in another container (\(record.whereabouts)), which this one cannot reach on 127.0.0.1: going to the destination directly")
            } else if alive, let record, record.state != .ready {
                log.info("the REST server (\(record.whereabouts)) is not ready\(record.lastError.map { " (\($0))" } ?? ""): going to the destination directly")
            }
        }
        return direct
    }
}
