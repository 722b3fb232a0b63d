import Foundation

/// rclone command lines, built by pure functions.
public enum RcloneCommand {
    /// `rclone serve restic PATH --addr ADDR`. Credentials are not here: they go in the environment
    /// (`serveEnvironment`), where `ps` cannot see them.
    public static func serveRestic(path: String, listenAddress: String, appendOnly: Bool) -> [String] {
        ["serve", "restic", path, "--addr", listenAddress] + (appendOnly ? ["--append-only"] : [])
    }

    /// rclone reads any flag from RCLONE_<FLAG>: `--user`/`--pass` as RCLONE_USER/RCLONE_PASS.
    public static func serveEnvironment(base: [String: String], credentials: RestCredentials?) -> [String: String] {
        var environment = base
        environment.removeValue(forKey: "RCLONE_USER")
        environment.removeValue(forKey: "RCLONE_PASS")
        environment.removeValue(forKey: "RCLONE_HTPASSWD")
        if let credentials {
            environment["RCLONE_USER"] = credentials.username
            environment["RCLONE_PASS"] = credentials.password
        }
        return environment
    }

    /// Without credentials the server must not be reachable from other machines.
    public static func listenAddress(port: Int, authenticated: Bool) -> String {
        authenticated ? ":\(port)" : "127.0.0.1:\(port)"
    }

    public static func listTopLevel(path: String) -> [String] {
        ["lsjson", "--max-depth", "1", path]
    }

    public static let version = ["version"]
}

/// What is at the destination, as far as deciding whether `restic init` is safe.
public enum DestinationContents: Sendable, Equatable {
    /// Listed successfully: these top-level names are there (an empty list for an empty or absent
    /// directory), and this many files in `keys/`.
    case listed(names: [String], keyFiles: Int = 0)
    /// Could not be listed: credentials, network, a missing remote. Never initialise then.
    case unreadable(reason: String)

    /// restic init is safe only over a listing that succeeded and shows no repository: no `config`
    /// and no key file. (An empty `keys/` directory is what an init interrupted before it saved a key
    /// leaves behind: nothing was ever stored with it.)
    public var holdsRepository: Bool {
        if case .listed(let names, let keyFiles) = self { return names.contains("config") || keyFiles > 0 }
        return false
    }

    /// Key files but no config: an init interrupted between the two.
    public var isInterruptedInit: Bool {
        if case .listed(let names, let keyFiles) = self { return !names.contains("config") && keyFiles > 0 }
        return false
    }
}

public enum DestinationInspector {
    /// Reads `rclone lsjson` output (exit 3 = directory not found, which is an empty destination).
    public static func interpretListing(_ result: ProcessResult) -> DestinationContents {
        switch result.status {
        case .exited(0):
            guard let entries = try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [[String: Any]] else {
                return .unreadable(reason: "rclone lsjson printed something that is not a listing")
            }
            return .listed(names: entries.compactMap { $0["Name"] as? String ?? $0["Path"] as? String })
        case .exited(3):
            return .listed(names: [])
        default:
            return .unreadable(reason: rcloneReason(result.standardError) ?? "rclone lsjson ended with \(result.status)")
        }
    }

    /// The last `ERROR :`/`Failed to …` sentence of rclone's log, without its timestamp.
    public static func rcloneReason(_ log: String) -> String? {
        let lines = log.split(separator: "\n").map(String.init)
        let interesting = lines.last { $0.contains("Failed to") || $0.contains("ERROR") || $0.contains("CRITICAL") } ?? lines.last
        guard var line = interesting?.trimmingCharacters(in: .whitespaces), !line.isEmpty else { return nil }
        // "2026/11/22 02:09:39 ERROR : …"
        if line.count > 20, line.prefix(4).allSatisfy(\.isNumber), line.dropFirst(4).first == "/" {
            line = String(line.dropFirst(20))
        }
        return line
    }

    /// Local directories are looked at directly: no rclone needed for the default destination.
    public static func inspectLocal(_ path: String) -> DestinationContents {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return .listed(names: []) }
        guard isDirectory.boolValue else { return .unreadable(reason: "\(path) exists and is not a directory") }
        do {
            let names = try FileManager.default.contentsOfDirectory(atPath: path)
            let keys = names.contains("keys") ? try FileManager.default.contentsOfDirectory(atPath: "\(path)/keys").count : 0
            return .listed(names: names, keyFiles: keys)
        } catch {
            return .unreadable(reason: "cannot list \(path): \(describe(error))")
        }
    }

    /// `rclone lsjson` of one level of `path`, within `timeout`.
    public static func listTopLevel(_ path: String, runner: any ProcessRunning, environment: [String: String], timeout: Double) -> DestinationContents {
        let spec = ProcessSpec(executable: "rclone", arguments: RcloneCommand.listTopLevel(path: path), environment: environment,
                               standardOutput: .collect(limit: 4 << 20), standardError: .tail(limit: 16 * 1024))
        do {
            guard let result = try runner.run(spec, timeout: timeout) else {
                return .unreadable(reason: "listing \(path) did not finish within \(Int(timeout)) s")
            }
            return interpretListing(result)
        } catch {
            return .unreadable(reason: "\(error)")
        }
    }

    /// What is at the destination: the directory itself for a local path, `rclone lsjson` otherwise
    /// (the top level, then `keys/` when there is one).
    public static func inspect(_ destination: Destination, runner: any ProcessRunning, environment: [String: String],
                               timeout: Double = 120) -> DestinationContents {
        if case .localDirectory(let path, _) = destination { return inspectLocal(path) }
        let top = listTopLevel(destination.rclonePath, runner: runner, environment: environment, timeout: timeout)
        guard case .listed(let names, _) = top, names.contains("keys") else { return top }
        switch listTopLevel(destination.rclonePath + "/keys", runner: runner, environment: environment, timeout: timeout) {
        case .listed(let keys, _): return .listed(names: names, keyFiles: keys.count)
        case .unreadable(let reason): return .unreadable(reason: reason)
        }
    }
}
