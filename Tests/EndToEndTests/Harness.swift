import Foundation
import XCTest
import TestSupport
@testable import CloudBackupCore

/// One isolated world per test: its own home, state directory, data, restic cache and port, the built
/// `cloud-backup` binary, and every process it starts stopped again (by PID) when the test ends.
final class Sandbox: @unchecked Sendable {
    let root: String
    let binary: String
    let port: Int
    var environment: [String: String]
    private var background: [any RunningProcess] = []
    private var backgroundLogs: [String] = []
    let runner = SystemProcessRunner()

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures").path

    static var builtBinary: String {
        if let explicit = ProcessInfo.processInfo.environment["CLOUD_BACKUP_BINARY"] { return explicit }
        // The test bundle sits beside the products: .build/debug/cloud-backupPackageTests.xctest
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("cloud-backup").path
    }

    init(_ name: String = #function) throws {
        let base = NSTemporaryDirectory() + "cloud-backup-e2e/\(name.filter { $0.isLetter || $0.isNumber })-\(UUID().uuidString.prefix(8))"
        root = base
        binary = Sandbox.builtBinary
        port = try freeLoopbackPort()
        for directory in ["home", "state", "data", "cache", "logs"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(directory)", withIntermediateDirectories: true)
        }
        environment = [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
            "HOME": "\(root)/home",
            "RESTIC_PASSWORD": "e2e-repository-password-7f3a",
            "CLOUD_BACKUP_STATE_DIR": "\(root)/state",
            "RESTIC_CACHE_DIR": "\(root)/cache",
            "RESTIC_REST_PORT": "\(port)",
            "LOCK_WAIT_SECONDS": "30",
            "CLOUD_BACKUP_BACKOFF_SCALE": "0.1",
            "RCLONE_CONFIG": "\(root)/home/rclone.conf",
        ]
        _ = FileManager.default.createFile(atPath: "\(root)/home/rclone.conf", contents: Data())
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: binary), "build the package first: \(binary) is missing")
    }

    var repository: String { "\(root)/state/repository" }
    var data: String { "\(root)/data" }

    /// As `docker compose run --rm` sees a server container: another PID namespace (its own /proc),
    /// the same host name, network and state volume. Needs root.
    static let otherPIDNamespace = ["unshare", "--pid", "--fork", "--mount-proc"]

    /// Runs `cloud-backup ARGS…` to the end (through `wrapper`, e.g. `Sandbox.otherPIDNamespace`).
    @discardableResult
    func run(_ arguments: [String], _ extra: [String: String] = [:], removing: [String] = [], stdin: String? = nil, wrapper: [String] = []) throws -> ProcessResult {
        if !wrapper.isEmpty {
            var env = environment.merging(extra) { $1 }
            removing.forEach { env.removeValue(forKey: $0) }
            return try runner.run(ProcessSpec(executable: wrapper[0], arguments: Array(wrapper.dropFirst()) + [binary] + arguments, environment: env,
                                              standardOutput: .collect(limit: 8 << 20), standardError: .collect(limit: 8 << 20)))
        }
        var env = environment.merging(extra) { $1 }
        removing.forEach { env.removeValue(forKey: $0) }
        if let stdin {
            // Feed standard input through the shell; `exec` keeps the binary as the process.
            let file = "\(root)/stdin-\(UUID().uuidString.prefix(6))"
            try stdin.write(toFile: file, atomically: true, encoding: .utf8)
            return try runner.run(ProcessSpec(executable: "sh", arguments: ["-c", "exec \"$0\" \"$@\" < \(file)", binary] + arguments,
                                              environment: env, standardOutput: .collect(limit: 8 << 20), standardError: .collect(limit: 8 << 20)))
        }
        return try runner.run(ProcessSpec(executable: binary, arguments: arguments, environment: env,
                                          standardOutput: .collect(limit: 8 << 20), standardError: .collect(limit: 8 << 20)))
    }

    /// Starts `cloud-backup ARGS…` in the background with its output in a log file; stopped at cleanup.
    /// `wrapper` runs it through another program (e.g. `Sandbox.otherPIDNamespace`).
    func launch(_ arguments: [String], _ extra: [String: String] = [:], log name: String, wrapper: [String] = []) throws -> (process: any RunningProcess, log: String) {
        let log = "\(root)/logs/\(name).log"
        let command = wrapper + [binary] + arguments
        let spec = ProcessSpec(executable: "sh", arguments: ["-c", "exec \"$0\" \"$@\" >>\(log) 2>&1"] + command,
                               environment: environment.merging(extra) { $1 }, standardOutput: .discard, standardError: .discard)
        let process = try runner.launch(spec)
        background.append(process)
        backgroundLogs.append(log)
        return (process, log)
    }

    /// Starts any program in the background (fixtures, raw restic), stopped at cleanup.
    func launchProgram(_ executable: String, _ arguments: [String], _ extra: [String: String] = [:], log name: String) throws -> any RunningProcess {
        let log = "\(root)/logs/\(name).log"
        let spec = ProcessSpec(executable: "sh", arguments: ["-c", "exec \"$0\" \"$@\" >>\(log) 2>&1", executable] + arguments,
                               environment: environment.merging(extra) { $1 }, standardOutput: .discard, standardError: .discard)
        let process = try runner.launch(spec)
        background.append(process)
        return process
    }

    func startServer(_ extra: [String: String] = [:], log name: String = "server") throws -> (process: any RunningProcess, log: String) {
        let server = try launch(["start-server"], extra, log: name)
        let credentials = extra["RESTIC_REST_USERNAME"].map { RestCredentials(username: $0, password: extra["RESTIC_REST_PASSWORD"] ?? "") }
        try waitFor("the REST server on port \(port)", seconds: 30) { self.serverIsReady(credentials: credentials) }
        return server
    }

    /// Ready as jobs see it: answering, and its record in the state directory says so.
    func serverIsReady(credentials: RestCredentials? = nil) -> Bool {
        guard RestServerProbe.probe(port: port, credentials: credentials, timeout: 1) == .restServer else { return false }
        let (record, alive) = ServerRecord.read(stateDirectory: "\(root)/state")
        return alive && record?.state == .ready
    }

    /// Raw restic on the repository directory (not through cloud-backup), to check what is really there.
    func restic(_ arguments: [String], repository: String? = nil, password: String? = nil) throws -> ProcessResult {
        var env = environment
        env["RESTIC_REPOSITORY"] = repository ?? self.repository
        if let password { env["RESTIC_PASSWORD"] = password }
        return try runner.run(ProcessSpec(executable: "restic", arguments: arguments, environment: env,
                                          standardOutput: .collect(limit: 8 << 20), standardError: .collect(limit: 1 << 20)))
    }

    func snapshotIDs(repository: String? = nil) throws -> [String] {
        let result = try restic(["snapshots", "--json", "--no-lock"], repository: repository)
        XCTAssertEqual(result.status, .exited(0), result.standardError)
        let list = try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [[String: Any]] ?? []
        return list.compactMap { $0["short_id"] as? String }
    }

    /// The repository's lock files (a lock being written is a `-tmp-` file first: not a lock yet).
    func locks(repository: String? = nil) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "\(repository ?? self.repository)/locks")) ?? []
        return names.filter { $0.count == 64 && $0.allSatisfy(\.isHexDigit) }
    }

    /// Small text files, or `megabytes` of random data in 2 MB files (restic cannot compress or dedup it).
    func writeData(files: Int = 5, megabytes: Int = 0) throws {
        for index in 0..<files {
            try "file \(index) \(UUID().uuidString)\n".write(toFile: "\(data)/file-\(index).txt", atomically: true, encoding: .utf8)
        }
        if megabytes > 0 {
            try FileManager.default.createDirectory(atPath: "\(data)/big", withIntermediateDirectories: true)
            let result = try runner.run(ProcessSpec(executable: "sh", arguments: ["-c", "for i in $(seq \(megabytes / 2)); do head -c 2097152 /dev/urandom > \(data)/big/blob-$i; done"],
                                                    environment: environment))
            XCTAssertEqual(result.status, .exited(0))
        }
    }

    /// Every process's parent, read once from /proc (with the product's own /proc readers).
    static func processParents() -> [pid_t: pid_t] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }
            .reduce(into: [:]) { parents, pid in parents[pid] = PortOwner.parentPID(of: pid) }
    }

    func childPIDs(of parent: pid_t, named name: String) -> [pid_t] {
        Self.processParents().filter { $0.value == parent && PortOwner.processName($0.key) == name }.map(\.key).sorted()
    }

    func readLog(_ path: String) -> String {
        (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    }

    /// Every process below `pid` (children first found by their parent PID), to stop them all.
    func descendants(of pid: pid_t) -> [pid_t] {
        let parents = Self.processParents()
        var found: [pid_t] = []
        var frontier = [pid]
        while let next = frontier.popLast() {
            let children = parents.filter { $0.value == next }.map(\.key)
            found += children
            frontier += children
        }
        return found
    }

    /// Stops what the test started, by PID: SIGTERM (start-server stops its rclone), then SIGKILL for
    /// the process and anything below it that is still there.
    func cleanup() {
        for process in background where !process.hasExited {
            let below = descendants(of: process.pid)
            process.send(SIGTERM)
            if waitForExit(process, seconds: 10) == nil {
                process.send(SIGKILL)
                _ = process.wait()
            }
            for pid in below { kill(pid, SIGKILL) }
        }
        if ProcessInfo.processInfo.environment["KEEP_E2E_SANDBOX"] == nil {
            try? FileManager.default.removeItem(atPath: root)
        }
    }
}

/// A test case with a fresh sandbox per test, cleaned up (every process stopped) after it.
class SandboxTestCase: XCTestCase {
    var sandbox: Sandbox!

    override func setUpWithError() throws {
        sandbox = try Sandbox(name)
    }

    override func tearDown() {
        sandbox?.cleanup()
    }
}

/// The Healthchecks fixture (Tests/Fixtures/ping_recorder.py), recording every ping.
final class PingRecorder {
    let process: any RunningProcess
    let record: String
    let port: Int

    struct Ping {
        var method: String
        var path: String
        var query: [String: String]
        var body: String
    }

    /// Serves HTTPS when `tls` names a directory made by Tests/Fixtures/test_ca.py (its server.pem and
    /// server-key.pem; clients trust its ca.pem).
    let scheme: String

    init(in sandbox: Sandbox, arguments: [String] = [], tls: String? = nil) throws {
        record = "\(sandbox.root)/pings-\(UUID().uuidString.prefix(6)).jsonl"
        let ready = record + ".port"
        scheme = tls == nil ? "http" : "https"
        let tlsArguments = tls.map { ["--tls", $0] } ?? []
        process = try sandbox.launchProgram("python3", ["\(Sandbox.fixtures)/ping_recorder.py", record, "--ready-file", ready] + tlsArguments + arguments,
                                            log: "ping-recorder")
        try waitFor("the ping recorder", seconds: 15) { FileManager.default.fileExists(atPath: ready) }
        port = Int(try String(contentsOfFile: ready, encoding: .utf8)) ?? 0
    }

    func url(check: String = "2b8a4c0e-1d2f-4e5a-9b6c-7d8e9f0a1b2c") -> String {
        "\(scheme)://127.0.0.1:\(port)/ping/\(check)"
    }

    var pings: [Ping] {
        guard let text = try? String(contentsOfFile: record, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
            return Ping(method: object["method"] as? String ?? "", path: object["path"] as? String ?? "",
                        query: object["query"] as? [String: String] ?? [:], body: object["body"] as? String ?? "")
        }
    }
}


func waitFor(_ what: String, seconds: Double, file: StaticString = #filePath, line: UInt = #line, _ condition: () throws -> Bool) throws {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if try condition() { return }
        Thread.sleep(forTimeInterval: 0.05)
    }
    XCTFail("timed out after \(seconds) s waiting for \(what)", file: file, line: line)
    throw CloudBackupError.internalError("timed out waiting for \(what)")
}

/// Waits for a process with a deadline, so a hung child fails the test instead of the suite.
func waitForExit(_ process: any RunningProcess, seconds: Double) -> ProcessResult? {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if process.hasExited { return process.wait() }
        Thread.sleep(forTimeInterval: 0.05)
    }
    return nil
}
