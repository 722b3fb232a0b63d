import XCTest
@testable import CloudBackupCore

/// Answers each launch with a scripted result and records what was asked: for the job's decisions,
/// not for process handling (ProcessRunnerTests use real processes).
final class FakeProcessRunner: ProcessRunning, @unchecked Sendable {
    private let lock = NSLock()
    private(set) var specs: [ProcessSpec] = []
    private let answer: @Sendable (ProcessSpec, Int) -> ProcessResult

    init(answer: @escaping @Sendable (ProcessSpec, Int) -> ProcessResult) {
        self.answer = answer
    }

    func launch(_ spec: ProcessSpec) throws -> any RunningProcess {
        lock.lock()
        specs.append(spec)
        let index = specs.count - 1
        lock.unlock()
        return FinishedProcess(result: answer(spec, index))
    }

    var commands: [String] {
        lock.lock(); defer { lock.unlock() }
        return specs.map { ([$0.executable] + $0.arguments).joined(separator: " ") }
    }
}

final class FinishedProcess: RunningProcess, @unchecked Sendable {
    let pid: pid_t = 99999
    let result: ProcessResult
    init(result: ProcessResult) { self.result = result }
    func wait() -> ProcessResult { result }
    func send(_ signal: Int32) {}
    var hasExited: Bool { true }
}

final class ResticJobTests: XCTestCase {
    static let missing014 = "Fatal: unable to open config file: <config/> does not exist\nIs there a repository at the following location?\nrclone:r:b\n"
    var directory: String!

    override func setUp() {
        directory = NSTemporaryDirectory() + "restic-job-tests-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // A PATH where `restic` exists, so the job gets past its preflight.
        _ = FileManager.default.createFile(atPath: directory + "/restic", contents: Data("#!/bin/sh\n".utf8), attributes: [.posixPermissions: 0o755])
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func configuration(_ extra: [String: String]) throws -> Configuration {
        // Port 1 on loopback: nothing answers there, so jobs go to the destination directly.
        try ConfigurationLoader.load(environment: ["RESTIC_PASSWORD": "pw", "PATH": directory, "HOME": directory,
                                                   "RESTIC_REST_PORT": "1", "LOCK_WAIT_SECONDS": "1"].merging(extra) { $1 },
                                     needs: [.repositoryPassword])
    }

    func runJob(_ kind: ResticJob.Kind, _ extra: [String: String], runner: FakeProcessRunner) throws -> (Int32, String) {
        let lines = LineCollector()
        let context = JobContext(environment: [:], runner: runner, signals: SignalMonitor(), log: Logger(sink: { lines.add($0) }),
                                 transport: HTTPTransport { _, _, _ in .init(status: 200, headers: [:]) },
                                 hostName: "vm", sleep: { _ in }, backoffScale: 0.001, stdoutIsTerminal: true)
        let code = ResticJob(kind: kind, userArguments: ["/data"], configuration: try configuration(extra), context: context).run()
        return (code, lines.text)
    }

    func testMissingRepositoryOnAnEmptyRemoteIsInitialisedThenTheBackupRetried() throws {
        let runner = FakeProcessRunner { spec, index in
            switch spec.arguments.first {
            case "backup" where index == 0: return ProcessResult(status: .exited(1), standardError: Self.missing014)
            case "backup": return ProcessResult(status: .exited(0), standardOutput: "snapshot abcd1234 saved\n")
            case "lsjson": return ProcessResult(status: .exited(0), standardOutput: "[]")
            case "init": return ProcessResult(status: .exited(0))
            default: return ProcessResult(status: .exited(99))
            }
        }
        let (code, log) = try runJob(.backup, ["BACKUP_REMOTE": "r:b"], runner: runner)
        XCTAssertEqual(code, 0, log)
        XCTAssertEqual(runner.commands, ["restic backup /data", "rclone lsjson --max-depth 1 r:b", "restic init", "restic backup /data"])
        XCTAssertEqual(runner.specs[2].environment["RESTIC_REPOSITORY"], "rclone:r:b")
    }

    func testAFailedListingNeverInitialises() throws {
        let runner = FakeProcessRunner { spec, _ in
            switch spec.arguments.first {
            case "backup": return ProcessResult(status: .exited(1), standardError: Self.missing014)
            case "lsjson": return ProcessResult(status: .exited(1), standardError: "2026/11/22 02:00:00 ERROR : : error listing: AccessDenied: Access Denied\n")
            default: return ProcessResult(status: .exited(0))
            }
        }
        let (code, log) = try runJob(.backup, ["BACKUP_REMOTE": "r:b"], runner: runner)
        XCTAssertEqual(code, ExitCode.unavailable)
        XCTAssertFalse(runner.commands.contains("restic init"))
        XCTAssertTrue(log.contains("cannot reach the backup destination r:b: ERROR : : error listing: AccessDenied: Access Denied"), log)
    }

    func testAListingThatShowsARepositoryNeverInitialises() throws {
        let runner = FakeProcessRunner { spec, _ in
            switch spec.arguments.first {
            case "backup": return ProcessResult(status: .exited(10), standardError: "Fatal: repository does not exist")
            case "lsjson": return ProcessResult(status: .exited(0), standardOutput: #"[{"Path":"config","Name":"config","IsDir":false},{"Path":"keys","Name":"keys","IsDir":true}]"#)
            default: return ProcessResult(status: .exited(0))
            }
        }
        let (code, log) = try runJob(.backup, ["BACKUP_REMOTE": "r:b"], runner: runner)
        XCTAssertEqual(code, ExitCode.failure)
        XCTAssertFalse(runner.commands.contains("restic init"))
        XCTAssertTrue(log.contains("it is not safe to create one at r:b"), log)
    }

    func testADirectoryNotFoundIsAnEmptyDestination() throws {
        let runner = FakeProcessRunner { spec, index in
            switch spec.arguments.first {
            case "backup": return ProcessResult(status: .exited(index == 0 ? 10 : 0))
            case "lsjson": return ProcessResult(status: .exited(3), standardError: "ERROR : : error listing: directory not found")
            default: return ProcessResult(status: .exited(0))
            }
        }
        XCTAssertEqual(try runJob(.backup, ["BACKUP_REMOTE": "r:b"], runner: runner).0, 0)
        XCTAssertTrue(runner.commands.contains("restic init"))
    }

    func testForgetNeverInitialises() throws {
        let runner = FakeProcessRunner { _, _ in ProcessResult(status: .exited(1), standardError: Self.missing014) }
        let (code, log) = try runJob(.forget, ["BACKUP_REMOTE": "r:b"], runner: runner)
        XCTAssertEqual(code, 1)
        XCTAssertEqual(runner.commands, ["restic forget /data"])
        XCTAssertTrue(log.contains("there is no restic repository at r:b"), log)
    }

    func testALockIsUnlockedAndRetried() throws {
        let runner = FakeProcessRunner { spec, index in
            switch spec.arguments.first {
            case "backup" where index == 0:
                return ProcessResult(status: .exited(1), standardError: "unable to create lock in backend: repository is already locked exclusively by PID 7 on vm by root (UID 0, GID 0)\n")
            default: return ProcessResult(status: .exited(0))
            }
        }
        let (code, log) = try runJob(.backup, [:], runner: runner)
        XCTAssertEqual(code, 0, log)
        XCTAssertEqual(runner.commands, ["restic backup /data", "restic unlock", "restic backup /data"])
        XCTAssertTrue(log.contains("the repository is locked (locked exclusively by PID 7 on vm by root (UID 0, GID 0))"), log)
    }

    func testALockThatStaysIsBusyAfterTheWait() throws {
        let runner = FakeProcessRunner { spec, _ in
            spec.arguments.first == "unlock" ? ProcessResult(status: .exited(0))
                : ProcessResult(status: .exited(11), standardError: "repository is already locked by PID 7 on other by u")
        }
        let started = Date()
        let (code, log) = try runJob(.forget, ["LOCK_WAIT_SECONDS": "1"], runner: runner)
        XCTAssertEqual(code, ExitCode.busy)
        XCTAssertLessThan(Date().timeIntervalSince(started), 5)
        XCTAssertTrue(log.contains("still locked by another job after waiting 1 s"), log)
        XCTAssertGreaterThanOrEqual(runner.commands.filter { $0 == "restic unlock" }.count, 1)
    }

    func testWrongPasswordKeepsResticsExitCodeAndSaysWhatToDo() throws {
        let runner = FakeProcessRunner { _, _ in ProcessResult(status: .exited(12), standardError: "Fatal: wrong password or no key found") }
        let (code, log) = try runJob(.backup, [:], runner: runner)
        XCTAssertEqual(code, 12)
        XCTAssertTrue(log.contains("wrong password — RESTIC_PASSWORD does not open the repository"), log)
        XCTAssertEqual(runner.commands, ["restic backup /data"], "no init, no retry")
    }

    func testHostAndContainerIdWarning() throws {
        let runner = FakeProcessRunner { _, _ in ProcessResult(status: .exited(0)) }
        let lines = LineCollector()
        let context = JobContext(environment: [:], runner: runner, signals: SignalMonitor(), log: Logger(sink: { lines.add($0) }),
                                 transport: HTTPTransport { _, _, _ in .init(status: 200, headers: [:]) }, hostName: "4f9c2a1b3d5e", sleep: { _ in }, stdoutIsTerminal: true)
        _ = ResticJob(kind: .backup, userArguments: ["/d"], configuration: try configuration([:]), context: context).run()
        XCTAssertTrue(lines.text.contains("looks like a container id and RESTIC_HOST is not set"), lines.text)
        let withHost = FakeProcessRunner { _, _ in ProcessResult(status: .exited(0)) }
        _ = try runJob(.backup, ["RESTIC_HOST": "vm1"], runner: withHost)
        XCTAssertEqual(withHost.commands, ["restic backup --host vm1 /data"])
    }

    func testMissingResticIsUnavailable() throws {
        try FileManager.default.removeItem(atPath: directory + "/restic")
        let runner = FakeProcessRunner { _, _ in ProcessResult(status: .exited(0)) }
        let (code, log) = try runJob(.backup, [:], runner: runner)
        XCTAssertEqual(code, ExitCode.unavailable)
        XCTAssertTrue(log.contains("restic was not found on PATH"), log)
        XCTAssertTrue(runner.commands.isEmpty)
    }

    func testIncompleteSnapshotKeepsExitCode3() throws {
        let runner = FakeProcessRunner { _, _ in ProcessResult(status: .exited(3), standardOutput: "snapshot 1234abcd saved\n") }
        let (code, log) = try runJob(.backup, [:], runner: runner)
        XCTAssertEqual(code, 3)
        XCTAssertTrue(log.contains("snapshot 1234abcd saved; WARNING: some files could not be read"), log)
    }
}

final class LineCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func add(_ line: String) { lock.lock(); lines.append(line); lock.unlock() }
    var text: String { lock.lock(); defer { lock.unlock() }; return lines.joined() }
}

final class InterruptedJobTests: XCTestCase {
    func testRestic018ContextCanceledAfterOurStopIsAnInterruption() throws {
        let directory = NSTemporaryDirectory() + "interrupted-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = FileManager.default.createFile(atPath: directory + "/restic", contents: Data("#!/bin/sh\n".utf8), attributes: [.posixPermissions: 0o755])
        let signals = SignalMonitor()
        let runner = FakeProcessRunner { _, _ in
            // As restic 0.18 does when SIGINT arrives mid-backup.
            ProcessResult(status: .exited(1), standardError: "signal interrupt received, cleaning up\nFatal: unable to save snapshot: context canceled\n")
        }
        let configuration = try ConfigurationLoader.load(environment: ["RESTIC_PASSWORD": "pw", "PATH": directory, "HOME": directory, "RESTIC_REST_PORT": "1"],
                                                         needs: [.repositoryPassword])
        let lines = LineCollector()
        signals.simulateForTests(SIGTERM)
        let context = JobContext(environment: [:], runner: runner, signals: signals, log: Logger(sink: { lines.add($0) }),
                                 transport: HTTPTransport { _, _, _ in .init(status: 200, headers: [:]) }, hostName: "vm", sleep: { _ in }, stdoutIsTerminal: true)
        let code = ResticJob(kind: .backup, userArguments: ["/d"], configuration: configuration, context: context).run()
        XCTAssertEqual(code, 130)
        XCTAssertTrue(lines.text.contains("backup interrupted: stopped on request"), lines.text)
    }
}

final class InterruptedInitTests: XCTestCase {
    func run(keysListing: String) throws -> (Int32, [String], String) {
        let directory = NSTemporaryDirectory() + "interrupted-init-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = FileManager.default.createFile(atPath: directory + "/restic", contents: Data("#!/bin/sh\n".utf8), attributes: [.posixPermissions: 0o755])
        let runner = FakeProcessRunner { spec, index in
            switch (spec.arguments.first, spec.arguments.last) {
            case ("backup", _): return ProcessResult(status: .exited(index == 0 ? 10 : 0))
            case ("lsjson", "r:b"): return ProcessResult(status: .exited(0), standardOutput: #"[{"Name":"data"},{"Name":"keys"},{"Name":"locks"}]"#)
            case ("lsjson", "r:b/keys"): return ProcessResult(status: .exited(0), standardOutput: keysListing)
            default: return ProcessResult(status: .exited(0))
            }
        }
        let configuration = try ConfigurationLoader.load(environment: ["RESTIC_PASSWORD": "pw", "PATH": directory, "HOME": directory,
                                                                       "RESTIC_REST_PORT": "1", "BACKUP_REMOTE": "r:b"], needs: [.repositoryPassword])
        let lines = LineCollector()
        let context = JobContext(environment: [:], runner: runner, signals: SignalMonitor(), log: Logger(sink: { lines.add($0) }),
                                 transport: HTTPTransport { _, _, _ in .init(status: 200, headers: [:]) }, hostName: "vm", sleep: { _ in }, stdoutIsTerminal: true)
        let code = ResticJob(kind: .backup, userArguments: ["/d"], configuration: configuration, context: context).run()
        return (code, runner.commands, lines.text)
    }

    func testAnEmptyKeysDirectoryIsAnInitThatNeverSavedAKey() throws {
        let (code, commands, log) = try run(keysListing: "[]")
        XCTAssertEqual(code, 0, log)
        XCTAssertEqual(commands, ["restic backup /d", "rclone lsjson --max-depth 1 r:b", "rclone lsjson --max-depth 1 r:b/keys", "restic init", "restic backup /d"])
    }

    func testKeyFilesWithoutConfigAreNeverOverwritten() throws {
        let (code, commands, log) = try run(keysListing: #"[{"Name":"0123abcd"}]"#)
        XCTAssertEqual(code, 1)
        XCTAssertFalse(commands.contains("restic init"))
        XCTAssertTrue(log.contains("it holds key files (keys/) but no config: a `restic init` was interrupted after saving a key"), log)
    }
}
