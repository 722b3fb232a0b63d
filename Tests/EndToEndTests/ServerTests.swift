import Foundation
import XCTest
@testable import CloudBackupCore

/// `start-server` with real rclone: listening rules, authentication, supervision, stopping.
final class ServerTests: SandboxTestCase {
    func testWithoutCredentialsItServesOnLoopbackOnlyAndJobsUseIt() throws {
        try sandbox.writeData(files: 4)
        let (server, log) = try sandbox.startServer()
        XCTAssertTrue(sandbox.readLog(log).contains("on 127.0.0.1:\(sandbox.port) only: RESTIC_REST_USERNAME/RESTIC_REST_PASSWORD are not set"), sandbox.readLog(log))
        let rclone = sandbox.childPIDs(of: server.pid, named: "rclone")
        XCTAssertEqual(rclone.count, 1)
        XCTAssertEqual(PortOwner.commandLine(rclone[0]).dropFirst(), ["serve", "restic", sandbox.repository, "--addr", "127.0.0.1:\(sandbox.port)"])

        let backup = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(backup.status, .exited(0), backup.standardError)
        XCTAssertTrue(backup.standardError.contains("backup using the REST server at http://127.0.0.1:\(sandbox.port)/"), backup.standardError)
        XCTAssertEqual(try sandbox.snapshotIDs().count, 1, "the snapshot is in the local default directory")
        XCTAssertEqual(try sandbox.run(["server-status"]).status, .exited(0))

        server.send(SIGTERM)
        let stopped = waitForExit(server, seconds: 10)
        XCTAssertEqual(stopped?.status, .exited(0))
        XCTAssertTrue(sandbox.readLog(log).contains("REST server stopped"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/proc/\(rclone[0])"), "rclone stopped with the server")
        let status = try sandbox.run(["server-status"])
        XCTAssertEqual(status.status, .exited(1))
        XCTAssertEqual(status.standardOutput, "no REST server answers on 127.0.0.1:\(sandbox.port)\n")
    }

    func testWithCredentialsItRequiresThemAndKeepsThemOffEveryCommandLine() throws {
        try sandbox.writeData(files: 4)
        let secrets = ["RESTIC_REST_USERNAME": "backup-user", "RESTIC_REST_PASSWORD": "rest-secret-91c2"]
        sandbox.environment.merge(secrets) { $1 }
        let pings = try PingRecorder(in: sandbox)
        let checkID = "3c3c3c3c-3c3c-4c3c-8c3c-3c3c3c3c3c3c"
        let (server, log) = try sandbox.startServer(secrets)
        XCTAssertTrue(sandbox.readLog(log).contains("on port \(sandbox.port), all interfaces, authentication required"))
        let rclone = sandbox.childPIDs(of: server.pid, named: "rclone")
        XCTAssertEqual(PortOwner.commandLine(rclone.first ?? 0).dropFirst(), ["serve", "restic", sandbox.repository, "--addr", ":\(sandbox.port)"])
        XCTAssertEqual(RestServerProbe.probe(port: sandbox.port, credentials: nil), .refusedCredentials)
        XCTAssertEqual(RestServerProbe.probe(port: sandbox.port, credentials: RestCredentials(username: "backup-user", password: "wrong")), .refusedCredentials)

        // Watch every process's argv while a backup runs through the server.
        let seen = CommandLineWatcher()
        seen.start()
        let backup = try sandbox.run(["backup", sandbox.data], ["BACKUP_CHECK_URL": pings.url(check: checkID)])
        seen.stop()
        XCTAssertEqual(backup.status, .exited(0), backup.standardError)
        XCTAssertTrue(backup.standardError.contains("backup using the REST server"), backup.standardError)
        XCTAssertGreaterThan(seen.count, 0)

        let list = try sandbox.run(["restic", "snapshots"])
        XCTAssertEqual(list.status, .exited(0), list.standardError)
        XCTAssertTrue(list.standardError.contains("restic using the REST server"))

        let everything = [backup.standardOutput, backup.standardError, list.standardOutput, list.standardError,
                          sandbox.readLog(log), seen.all] + pings.pings.map(\.body)
        for secret in ["rest-secret-91c2", "e2e-repository-password-7f3a", checkID] {
            for text in everything {
                XCTAssertFalse(text.contains(secret), "\(secret) leaked into: \(text.prefix(2000))")
            }
        }
        XCTAssertEqual(pings.pings.count, 2)
        server.send(SIGTERM)
        XCTAssertEqual(waitForExit(server, seconds: 10)?.status, .exited(0))
    }

    func testKilledRcloneIsRestartedAndJobsContinue() throws {
        try sandbox.writeData(files: 2)
        let (server, log) = try sandbox.startServer()
        let first = sandbox.childPIDs(of: server.pid, named: "rclone")
        XCTAssertEqual(first.count, 1)
        kill(first[0], SIGKILL)
        try waitFor("a new rclone", seconds: 20) {
            let now = self.sandbox.childPIDs(of: server.pid, named: "rclone")
            return now.count == 1 && now != first && self.sandbox.serverIsReady()
        }
        XCTAssertTrue(sandbox.readLog(log).contains("rclone serve restic stopped (killed by signal 9 (SIGKILL))"), sandbox.readLog(log))
        let backup = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(backup.status, .exited(0), backup.standardError)
        XCTAssertTrue(backup.standardError.contains("using the REST server"))
        server.send(SIGINT)
        XCTAssertEqual(waitForExit(server, seconds: 10)?.status, .exited(0))
    }

    func testAPortHeldByAnotherProgramIsReportedAtOnce() throws {
        // Something else holds the port. (Repeated failures to start are tested with a refusing remote.)
        let blocker = try sandbox.launchProgram("python3", ["-c", """
            import socket, time
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", \(sandbox.port))); s.listen(1); time.sleep(120)
            """], log: "blocker")
        try waitFor("the port to be taken", seconds: 10) { self.portIsTaken(self.sandbox.port) }
        let result = try sandbox.run(["start-server"])
        XCTAssertEqual(result.status, .exited(69), result.standardError)
        XCTAssertTrue(result.standardError.contains("port \(sandbox.port) is already in use by python3 (PID \(blocker.pid))"), result.standardError)
        blocker.send(SIGKILL)
    }

    func testTheRcloneOfAKilledServerIsReplacedAndASecondServerRefused() throws {
        try sandbox.writeData(files: 2)
        let (first, _) = try sandbox.startServer(log: "first")
        let second = try sandbox.run(["start-server"])
        XCTAssertEqual(second.status, .exited(69), second.standardError)
        XCTAssertTrue(second.standardError.contains("another `cloud-backup start-server` (PID \(first.pid)) already serves port \(sandbox.port)"), second.standardError)

        // SIGKILL leaves its rclone (own process group) holding the port.
        let orphan = try XCTUnwrap(sandbox.childPIDs(of: first.pid, named: "rclone").first)
        first.send(SIGKILL)
        _ = first.wait()
        XCTAssertEqual(kill(orphan, 0), 0, "rclone outlived its server")
        // (The orphan still answers, so wait for the new server's own word that it is ready.)
        let (replacement, log) = try sandbox.launch(["start-server"], log: "replacement")
        try waitFor("the replacement server", seconds: 30) { self.sandbox.readLog(log).contains("REST server ready") }
        XCTAssertTrue(sandbox.readLog(log).contains("rclone serve restic (PID \(orphan)) left behind by a start-server that was killed still holds port \(sandbox.port): stopping it"), sandbox.readLog(log))
        let state = (try? String(contentsOfFile: "/proc/\(orphan)/stat", encoding: .utf8))?.split(separator: ")").last?.split(separator: " ").first
        XCTAssertTrue(state == nil || state == "Z", "the orphan is gone (state \(state.map(String.init) ?? "none"))")
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        replacement.send(SIGTERM)
        XCTAssertEqual(waitForExit(replacement, seconds: 10)?.status, .exited(0))
    }

    func portIsTaken(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    func testMissingRcloneIsUnavailable() throws {
        let result = try sandbox.run(["start-server"], ["PATH": "/nonexistent"])
        XCTAssertEqual(result.status, .exited(69))
        XCTAssertTrue(result.standardError.contains("rclone was not found on PATH (/nonexistent). Install it"), result.standardError)
    }
}

/// Samples every process's command line, to prove no secret is ever on one.
final class CommandLineWatcher: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: Set<String> = []
    private var running = true
    private var samples = 0
    private let done = DispatchSemaphore(value: 0)

    func start() {
        Thread {
            while self.isRunning {
                let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
                var found: Set<String> = []
                for pid in entries where Int32(pid) != nil {
                    if let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty {
                        found.insert(String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self))
                    }
                }
                self.lock.lock()
                self.lines.formUnion(found)
                self.samples += 1
                self.lock.unlock()
                Thread.sleep(forTimeInterval: 0.02)
            }
            self.done.signal()
        }.start()
    }

    private var isRunning: Bool { lock.lock(); defer { lock.unlock() }; return running }

    func stop() {
        lock.lock(); running = false; lock.unlock()
        done.wait()
    }

    var count: Int { lock.lock(); defer { lock.unlock() }; return samples }
    var all: String { lock.lock(); defer { lock.unlock() }; return lines.joined(separator: "\n") }
}

final class AppendOnlyServerTests: SandboxTestCase {
    func testAnAppendOnlyServerRefusesDeletionsWhileLocalForgetStillWorks() throws {
        try sandbox.writeData(files: 3)
        sandbox.environment["RESTIC_REST_APPEND_ONLY"] = "true"
        let (server, log) = try sandbox.startServer()
        XCTAssertTrue(sandbox.readLog(log).contains("append-only mode"))
        for _ in 0..<2 {
            let backup = try sandbox.run(["backup", sandbox.data])
            XCTAssertEqual(backup.status, .exited(0), backup.standardError)
            XCTAssertTrue(backup.standardError.contains("backup using the REST server"), backup.standardError)
        }
        // An external client cannot delete: the REST API's DELETE of a snapshot is refused.
        let snapshot = try FileManager.default.contentsOfDirectory(atPath: sandbox.repository + "/snapshots")[0]
        let status = RestServerProbe.requestStatus(method: "DELETE", host: "127.0.0.1", port: sandbox.port,
                                                   path: "/snapshots/\(snapshot)", credentials: nil, timeout: 5)
        XCTAssertNotNil(status)
        XCTAssertFalse((200..<300).contains(status ?? 200), "DELETE answered \(status ?? 0)")
        XCTAssertEqual(try sandbox.snapshotIDs().count, 2)

        let forget = try sandbox.run(["forget", "--keep-last", "1", "--prune"])
        XCTAssertEqual(forget.status, .exited(0), forget.standardError)
        XCTAssertTrue(forget.standardError.contains("RESTIC_REST_APPEND_ONLY is set, so the REST server refuses deletions: going to the destination directly"), forget.standardError)
        XCTAssertEqual(try sandbox.snapshotIDs().count, 1)
        XCTAssertEqual(try sandbox.restic(["check"]).status, .exited(0))
        server.send(SIGTERM)
        XCTAssertEqual(waitForExit(server, seconds: 10)?.status, .exited(0))
    }
}
