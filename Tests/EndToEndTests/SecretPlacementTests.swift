import Foundation
import XCTest
@testable import CloudBackupCore

/// Every rclone and restic the tool (or restic itself) starts is recorded by a wrapper first on PATH:
/// its argv and its environment as the kernel handed them over (/proc/PID/environ, before `exec`).
struct RecordedCall {
    var tool: String
    var arguments: [String]
    var environment: [String: String]

    static func installWrappers(in sandbox: Sandbox, tools: [String] = ["rclone", "restic"]) throws -> String {
        let bin = "\(sandbox.root)/bin", calls = "\(sandbox.root)/calls"
        for directory in [bin, calls] { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        for tool in tools {
            let real = try XCTUnwrap(ExecutableLookup.resolve(tool, environment: sandbox.environment), "\(tool) is not installed")
            let script = """
                #!/bin/sh
                f="\(calls)/\(tool)-$$-$(date +%s%N)"
                printf '%s\\0' "$@" > "$f.argv"
                cat /proc/$$/environ > "$f.environ"
                exec \(real) "$@"

                """
            try script.write(toFile: "\(bin)/\(tool)", atomically: true, encoding: .utf8)
            chmod("\(bin)/\(tool)", 0o755)
        }
        sandbox.environment["PATH"] = "\(bin):\(sandbox.environment["PATH"] ?? "/usr/bin:/bin")"
        return calls
    }

    static func read(_ directory: String) -> [RecordedCall] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".argv") }.sorted()
        return names.map { name in
            let stem = "\(directory)/\(name.dropLast(".argv".count))"
            let argv = FileManager.default.contents(atPath: "\(stem).argv") ?? Data()
            let environ = FileManager.default.contents(atPath: "\(stem).environ") ?? Data()
            return RecordedCall(tool: String(name.prefix { $0 != "-" }),
                                arguments: argv.split(separator: 0).map { String(decoding: $0, as: UTF8.self) },
                                environment: parseEnviron(environ))
        }
    }

    static func parseEnviron(_ data: Data) -> [String: String] {
        data.split(separator: 0).reduce(into: [:]) { result, entry in
            let text = String(decoding: entry, as: UTF8.self)
            guard let equals = text.firstIndex(of: "=") else { return }
            result[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
    }

    var passwordVariables: [String] { environment.keys.filter { $0.hasPrefix("RESTIC_PASSWORD") }.sorted() }
}

final class SecretPlacementTests: SandboxTestCase {
    /// The repository password reaches restic only: no rclone (ours, restic's own `rclone:` backend,
    /// the server's) ever has RESTIC_PASSWORD, _FILE or _COMMAND, and restic still opens the repository.
    func testTheRepositoryPasswordReachesResticOnly() throws {
        try sandbox.writeData(files: 3)
        let calls = try RecordedCall.installWrappers(in: sandbox)
        try "[store]\ntype = local\n".write(toFile: sandbox.environment["RCLONE_CONFIG"]!, atomically: true, encoding: .utf8)
        let repository = "\(sandbox.root)/remote-repo"
        sandbox.environment["BACKUP_REMOTE"] = "store:\(repository)"
        let passwordFile = "\(sandbox.root)/password"
        try "e2e-repository-password-7f3a\n".write(toFile: passwordFile, atomically: true, encoding: .utf8)

        // Directly: restic creates the repository through its rclone: backend, after our rclone lsjson.
        let direct = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(direct.status, .exited(0), direct.standardError)
        XCTAssertTrue(direct.standardError.contains("backup using the destination directly (rclone:store:\(repository))"), direct.standardError)

        // Through the server, started with another password source; the job uses a third.
        let (server, _) = try sandbox.startServer(["RESTIC_PASSWORD_COMMAND": "cat \(passwordFile)", "RESTIC_PASSWORD": ""])
        let served = try XCTUnwrap(sandbox.childPIDs(of: server.pid, named: "rclone").first)
        let servedEnvironment = RecordedCall.parseEnviron(FileManager.default.contents(atPath: "/proc/\(served)/environ") ?? Data())
        XCTAssertFalse(servedEnvironment.isEmpty, "the server's rclone environment is readable")
        XCTAssertEqual(servedEnvironment.keys.filter { $0.hasPrefix("RESTIC_PASSWORD") }, [], "the server's rclone")
        let viaServer = try sandbox.run(["backup", sandbox.data], ["RESTIC_PASSWORD_FILE": passwordFile, "RESTIC_PASSWORD": ""])
        XCTAssertEqual(viaServer.status, .exited(0), viaServer.standardError)
        XCTAssertTrue(viaServer.standardError.contains("backup using the REST server"), viaServer.standardError)
        XCTAssertEqual(try sandbox.snapshotIDs(repository: repository).count, 2, "restic opened the repository both ways")

        let recorded = RecordedCall.read(calls)
        let rclones = recorded.filter { $0.tool == "rclone" }
        XCTAssertTrue(rclones.contains { $0.arguments.prefix(2) == ["serve", "restic"] && $0.arguments.contains("--stdio") }, "restic's own rclone")
        XCTAssertTrue(rclones.contains { $0.arguments.first == "lsjson" }, "our listing before init")
        XCTAssertTrue(rclones.contains { $0.arguments.prefix(2) == ["serve", "restic"] && $0.arguments.contains("--addr") }, "the server's rclone")
        for call in rclones {
            XCTAssertEqual(call.passwordVariables, [], "rclone \(call.arguments.joined(separator: " ")) got the repository password")
        }
        let restics = recorded.filter { $0.tool == "restic" && $0.arguments.first != "version" }
        XCTAssertGreaterThan(restics.count, 3)
        for call in restics {
            XCTAssertEqual(call.passwordVariables.count, 1, "restic \(call.arguments.joined(separator: " ")): exactly one password source, got \(call.passwordVariables)")
        }
        XCTAssertTrue(restics.contains { $0.passwordVariables == ["RESTIC_PASSWORD_FILE"] }, "the job's own source reached restic")
        server.send(SIGTERM)
        XCTAssertEqual(waitForExit(server, seconds: 10)?.status, .exited(0))
    }

    /// `:local,…,session_token=…:path`: the value never appears on any command line, in the tool's
    /// lines, in `status`, in the server's record or in a ping body; rclone (lsjson, serve restic, restic's
    /// own) still reaches the destination through the remote defined in its environment.
    func testAnOnTheFlyRemotesParametersStayOffCommandLinesLogsAndPings() throws {
        try sandbox.writeData(files: 3)
        let calls = try RecordedCall.installWrappers(in: sandbox)
        let pings = try PingRecorder(in: sandbox)
        let secret = "otf-token,4f9c:zz"
        let repository = "\(sandbox.root)/otf-repo"
        sandbox.environment["BACKUP_REMOTE"] = ":local,nounc=true,session_token=\"\(secret)\":\(repository)"
        sandbox.environment["BACKUP_CHECK_URL"] = pings.url()
        let watcher = CommandLineWatcher()
        watcher.start()

        let direct = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(direct.status, .exited(0), direct.standardError)
        let (server, log) = try sandbox.startServer()
        XCTAssertTrue(sandbox.readLog(log).contains("serving :local,nounc=true,session_token=***:\(repository) (rclone on-the-fly remote) on 127.0.0.1:\(sandbox.port) only"),
                      sandbox.readLog(log))
        let viaServer = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(viaServer.status, .exited(0), viaServer.standardError)
        XCTAssertTrue(viaServer.standardError.contains("backup using the REST server"), viaServer.standardError)
        let status = try sandbox.run(["status"])
        watcher.stop()
        XCTAssertEqual(try sandbox.snapshotIDs(repository: repository).count, 2, "both backups are in the on-the-fly remote's directory")

        let recorded = RecordedCall.read(calls)
        XCTAssertTrue(recorded.contains { $0.tool == "rclone" && $0.arguments.first == "lsjson" })
        XCTAssertTrue(recorded.contains { $0.tool == "rclone" && $0.arguments.contains("--stdio") })
        let serverRecord = (try? String(contentsOfFile: "\(sandbox.root)/state/server.json", encoding: .utf8)) ?? ""
        XCTAssertFalse(serverRecord.isEmpty)
        let texts = [direct.standardOutput, direct.standardError, viaServer.standardOutput, viaServer.standardError, status.standardOutput,
                     status.standardError, sandbox.readLog(log), serverRecord, watcher.all]
            + recorded.map { $0.arguments.joined(separator: " ") } + pings.pings.map(\.body)
        for text in texts {
            XCTAssertFalse(text.contains("otf-token"), "the remote's parameter leaked into: \(text.prefix(3000))")
        }
        XCTAssertEqual(pings.pings.count, 4, "start and end of both backups")
        server.send(SIGTERM)
        XCTAssertEqual(waitForExit(server, seconds: 10)?.status, .exited(0))
    }
}
