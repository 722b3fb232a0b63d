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
        var environment = withoutRepositoryPassword(base)
        environment.removeValue(forKey: "RCLONE_USER")
        environment.removeValue(forKey: "RCLONE_PASS")
        environment.removeValue(forKey: "RCLONE_HTPASSWD")
        if let credentials {
            environment["RCLONE_USER"] = credentials.username
            environment["RCLONE_PASS"] = credentials.password
        }
        return environment
    }

    /// The repository password is restic's alone; the children's base has none already, and a
    /// raw environment handed here by mistake loses it too.
    public static func withoutRepositoryPassword(_ base: [String: String]) -> [String: String] {
        base.filter { !ConfigurationLoader.repositoryPasswordVariables.contains($0.key) }
    }

    /// Without credentials the server must not be reachable from other machines.
    public static func listenAddress(port: Int, authenticated: Bool) -> String {
        authenticated ? ":\(port)" : "127.0.0.1:\(port)"
    }

    public static func listTopLevel(path: String) -> [String] {
        ["lsjson", "--max-depth", "1", path]
    }

    /// The files below `path` (restic's deepest layout is `data/xx/pack`), one per line.
    public static func listFiles(path: String) -> [String] {
        ["lsf", "--recursive", "--files-only", "--max-depth", "3", path]
    }

    public static func deleteFile(path: String) -> [String] {
        ["deletefile", path]
    }

    public static let version = ["version"]
}

/// What is at the destination, as far as deciding whether `restic init` is safe.
public enum DestinationContents: Sendable, Equatable {
    /// Listed successfully: these top-level names are there (an empty list for an empty or absent
    /// directory) and, for each of restic's own names among them, how many files it holds (`config`
    /// counts 1; a directory counts the files anywhere below it, up to a bound).
    case listed(names: [String], resticFiles: [String: Int] = [:])
    /// Could not be listed: credentials, network, a missing remote. Never initialise then.
    case unreadable(reason: String)

    /// The names restic gives the parts of a repository.
    public static let resticNames = ["config", "keys", "data", "index", "snapshots", "locks"]

    /// restic's names that hold at least one file: a repository is or was here. Empty directories
    /// do not count: they hold nothing (a `restic init` killed before it saved a key leaves exactly
    /// that), so creating a repository over them cannot lose anything.
    public var resticArtefacts: [String: Int] {
        guard case .listed(_, let files) = self else { return [:] }
        return files.filter { $0.value > 0 }
    }

    /// Key files and nothing else: an init interrupted after it saved a key, before the config.
    public var isInterruptedInit: Bool {
        Array(resticArtefacts.keys) == ["keys"]
    }

    /// "config, keys/ (2 files), data/ (57 files)" for messages.
    public var artefactList: String {
        resticArtefacts.sorted { Self.resticNames.firstIndex(of: $0.key)! < Self.resticNames.firstIndex(of: $1.key)! }
            .map { name, count in
                name == "config" ? "config" : "\(name)/ (\(count >= DestinationInspector.countLimit ? "\(count) or more" : "\(count)") file\(count == 1 ? "" : "s"))"
            }
            .joined(separator: ", ")
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

    /// Files counted below one of restic's directories before the count stops: any is enough.
    public static let countLimit = 1000

    /// Local directories are looked at directly: no rclone needed for the default destination.
    public static func inspectLocal(_ path: String) -> DestinationContents {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return .listed(names: []) }
        guard isDirectory.boolValue else { return .unreadable(reason: "\(path) exists and is not a directory") }
        do {
            let names = try FileManager.default.contentsOfDirectory(atPath: path)
            var files: [String: Int] = [:]
            for name in names where DestinationContents.resticNames.contains(name) {
                files[name] = try countLocalFiles("\(path)/\(name)")
            }
            return .listed(names: names, resticFiles: files)
        } catch {
            return .unreadable(reason: "cannot list \(path): \(describe(error))")
        }
    }

    /// Regular files at or below `path` (1 for a file), stopping at `countLimit`.
    static func countLocalFiles(_ path: String) throws -> Int {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return 0 }
        guard isDirectory.boolValue else { return 1 }
        guard let walker = FileManager.default.enumerator(at: URL(fileURLWithPath: path), includingPropertiesForKeys: [.isRegularFileKey],
                                                          options: [], errorHandler: { _, _ in false }) else {
            throw CloudBackupError.cannotWrite(path: path, reason: "cannot be read")
        }
        var count = 0
        for case let url as URL in walker {
            if (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
                count += 1
                if count >= countLimit { break }
            }
        }
        return count
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

    /// What is at the destination: the directory itself for a local path, rclone otherwise (the top
    /// level with `lsjson`, then the files below each of restic's directories found there).
    public static func inspect(_ destination: Destination, runner: any ProcessRunning, environment: [String: String],
                               timeout: Double = 120) -> DestinationContents {
        if case .localDirectory(let path, _) = destination { return inspectLocal(path) }
        let top = listTopLevel(destination.rclonePath, runner: runner, environment: environment, timeout: timeout)
        guard case .listed(let names, _) = top else { return top }
        var files: [String: Int] = [:]
        for name in names where DestinationContents.resticNames.contains(name) {
            if name == "config" {
                files[name] = 1
                continue
            }
            let spec = ProcessSpec(executable: "rclone", arguments: RcloneCommand.listFiles(path: "\(destination.rclonePath)/\(name)"),
                                   environment: environment, standardOutput: .collect(limit: 64 * 1024), standardError: .tail(limit: 16 * 1024))
            guard let result = try? runner.run(spec, timeout: timeout) else {
                return .unreadable(reason: "listing \(destination.rclonePath)/\(name) did not finish within \(Int(timeout)) s")
            }
            switch result.status {
            case .exited(0): files[name] = min(countLimit, result.standardOutput.split(separator: "\n").count)
            case .exited(3): files[name] = 0
            default: return .unreadable(reason: rcloneReason(result.standardError) ?? "rclone lsf ended with \(result.status)")
            }
        }
        return .listed(names: names, resticFiles: files)
    }
}
