import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One line of `cloud-backup status`.
public struct StatusCheck: Sendable, Equatable {
    public var name: String
    public var ok: Bool
    public var detail: String
    /// What to do, for a failed check.
    public var fix: String?

    static func pass(_ name: String, _ detail: String) -> StatusCheck { StatusCheck(name: name, ok: true, detail: detail, fix: nil) }
    static func fail(_ name: String, _ detail: String, fix: String) -> StatusCheck { StatusCheck(name: name, ok: false, detail: detail, fix: fix) }
}

/// `status`: checks every moving part, each with a bounded timeout, and says how to fix what is wrong.
/// It never pings: Healthchecks counts any request to a ping URL as a ping, so only the check URL's
/// host is resolved and connected to.
public struct StatusReport {
    public let environment: [String: String]
    public let context: JobContext
    public init(environment: [String: String], context: JobContext) {
        self.environment = environment
        self.context = context
    }

    public func run() -> [StatusCheck] {
        var checks: [StatusCheck] = []
        let configuration: Configuration
        do {
            configuration = try ConfigurationLoader.load(environment: environment, needs: [.repositoryPassword])
            checks.append(.pass("environment", "valid; destination \(configuration.destination)"))
        } catch let error as CloudBackupError {
            var problems = [error.description]
            if case .configuration(let list) = error { problems = list }
            checks.append(.fail("environment", problems.joined(separator: "; "),
                                fix: "set the variables as described (in .env for Docker Compose); `cloud-backup --help` lists them"))
            checks += toolChecks(environment: environment)
            return checks
        } catch {
            checks.append(.fail("environment", "\(error)", fix: "report this bug"))
            return checks
        }
        checks += toolChecks(environment: configuration.childEnvironment)
        let haveRestic = checks.contains { $0.name == "restic" && $0.ok }
        let haveRclone = checks.contains { $0.name == "rclone" && $0.ok }

        if configuration.infn != nil { checks += loginChecks(configuration) }
        checks.append(destinationCheck(configuration, haveRclone: haveRclone))
        let route = RouteFinder.find(configuration: configuration, log: Logger(sink: { _ in }))
        if haveRestic {
            let repository = repositoryCheck(configuration, route: route)
            checks.append(repository)
            if repository.ok { checks += snapshotChecks(configuration, route: route) }
        }
        checks.append(serverCheck(configuration))
        checks += scheduleChecks(configuration)
        if let readAccess = context.readAccess.statusLine { checks.append(readAccess) }
        let urls: [(String, URL?)] = [("BACKUP_CHECK_URL", configuration.backupCheckURL), ("FORGET_CHECK_URL", configuration.forgetCheckURL),
                                      ("CHECK_CHECK_URL", configuration.checkCheckURL), ("DRILL_CHECK_URL", configuration.drillCheckURL)]
        for (name, url) in urls {
            if let url { checks.append(pingHostCheck(name: name, url: url)) }
        }
        return checks
    }

    private func toolChecks(environment: [String: String]) -> [StatusCheck] {
        [("restic", ["version"]), ("rclone", ["version"])].map { tool, arguments in
            guard ExecutableLookup.resolve(tool, environment: environment) != nil else {
                return .fail(tool, "not found on PATH (\(environment["PATH"] ?? ""))", fix: "install it (Debian/Ubuntu: apt-get install \(tool))")
            }
            let spec = ProcessSpec(executable: tool, arguments: arguments, environment: environment,
                                   standardOutput: .collect(limit: 4096), standardError: .collect(limit: 4096))
            guard let result = try? context.runner.run(spec, timeout: 10), result.status.isSuccess else {
                return .fail(tool, "`\(tool) version` failed", fix: "reinstall \(tool)")
            }
            return .pass(tool, result.standardOutput.split(separator: "\n").first.map(String.init) ?? tool)
        }
    }

    /// INFN mode: the agent, the account, and the refresh token's days left. Starts nothing.
    private func loginChecks(_ configuration: Configuration) -> [StatusCheck] {
        guard let agent = InfnSetup.agent(configuration, context: context), let settings = configuration.infn else { return [] }
        guard ExecutableLookup.resolve("oidc-agent", environment: configuration.childEnvironment) != nil else {
            return [.fail("oidc-agent", "not found on PATH", fix: "install it (Debian/Ubuntu: apt-get install oidc-agent-cli)")]
        }
        var checks: [StatusCheck] = []
        if let accounts = agent.loadedAccounts() {
            checks.append(.pass("oidc-agent", "running on \(configuration.infnPaths.agentSocket)"))
            checks.append(accounts.contains(settings.accountName)
                ? .pass("login", "account \(settings.accountName) loaded")
                : .fail("login", "account \(settings.accountName) is not loaded", fix: "start the server (it loads the account) or run `cloud-backup config`"))
        } else {
            checks.append(.fail("oidc-agent", "not running on \(configuration.infnPaths.agentSocket)",
                                fix: "start the server: `cloud-backup start-server` (Docker: `docker compose up -d` or `docker-compose up -d`) starts it"))
        }
        do {
            switch RefreshTokenLifetime.of(try agent.refreshToken()) {
            case .expires(let date):
                // Rounded to the nearest day, as check-refresh-token and config say it.
                let days = RefreshTokenLifetime.daysLeft(until: date)
                let left = RefreshTokenLifetime.describe(daysLeft: days)
                checks.append(date > Date() && days >= settings.refreshTokenMinimumDays
                    ? .pass("login", "refresh token valid for \(left) more")
                    : .fail("login", date <= Date() ? "the refresh token has expired" : "the refresh token expires in \(left)",
                            fix: "run `docker compose run --rm cloud-backup reauth` (or `docker-compose run --rm cloud-backup reauth`)"))
            case .never:
                checks.append(.pass("login", "the refresh token does not expire"))
            case .unreadable(let reason):
                checks.append(.fail("login", reason, fix: "run `docker compose run --rm cloud-backup reauth` (or `docker-compose run --rm cloud-backup reauth`)"))
            }
        } catch {
            let failure = CloudBackupError.from(error)
            checks.append(.fail("login", failure.description, fix: "run `cloud-backup config`"))
        }
        return checks
    }

    private func destinationCheck(_ configuration: Configuration, haveRclone: Bool) -> StatusCheck {
        let destination = configuration.destination
        if case .localDirectory(let path, _) = destination {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
                return isDirectory.boolValue && access(path, W_OK) == 0
                    ? .pass("destination", "\(path) is a writable directory")
                    : .fail("destination", "\(path) is not a writable directory", fix: "fix its type or permissions, or point BACKUP_REMOTE elsewhere")
            }
            let parent = (path as NSString).deletingLastPathComponent
            return access(parent, W_OK) == 0 || !FileManager.default.fileExists(atPath: parent)
                ? .pass("destination", "\(path) will be created by the first backup")
                : .fail("destination", "cannot create \(path)", fix: "make \(parent) writable for this user")
        }
        guard haveRclone else {
            return .fail("destination", "\(destination.rclonePath) needs rclone", fix: "install rclone")
        }
        switch DestinationInspector.listTopLevel(destination.rclonePath, runner: context.runner, environment: configuration.childEnvironment, timeout: 30) {
        case .listed(let names, _):
            return .pass("destination", "\(destination.rclonePath) reachable (\(names.count) entries)")
        case .unreadable(let reason):
            return .fail("destination", "\(destination.rclonePath): \(reason)", fix: "check the remote's credentials and network (`rclone lsd \(destination.rclonePath)`)")
        }
    }

    private func resticSpec(_ arguments: [String], _ configuration: Configuration, route: RepositoryRoute) -> ProcessSpec {
        ProcessSpec(executable: "restic", arguments: arguments, environment: ResticCommand.environment(base: configuration.childEnvironment, route: route, password: configuration.resticPassword),
                    standardOutput: .collect(limit: 16 << 20), standardError: .tail(limit: 16 * 1024))
    }

    /// The same probe as the jobs' (`RepositoryProbe`: `restic cat config` on the route).
    private func repositoryCheck(_ configuration: Configuration, route: RepositoryRoute) -> StatusCheck {
        switch RepositoryProbe.run(ResticInvoker(configuration: configuration, runner: context.runner, route: route), timeout: 30) {
        case .exists:
            return .pass("repository", "initialised, password accepted (through \(route))")
        case .missing:
            return .fail("repository", "no repository at \(configuration.destination.displayPath) yet",
                         fix: "run `cloud-backup backup <dirs>`: the first backup creates it")
        case .wrongPassword:
            return .fail("repository", "RESTIC_PASSWORD does not open the repository",
                         fix: "set RESTIC_PASSWORD to the password the repository was created with")
        case .failed(.unreachable(let reason)):
            return .fail("repository", reason, fix: "check the destination and the REST server")
        case .failed(let outcome):
            return .fail("repository", outcome.reason, fix: "see `cloud-backup restic cat config` for details")
        }
    }

    /// This host's newest snapshot and its age. restic picks it (`--latest 1 --host`), so the answer
    /// stays small however many snapshots the repository holds; other hosts are not reported.
    func snapshotChecks(_ configuration: Configuration, route: RepositoryRoute) -> [StatusCheck] {
        let thisHost = configuration.resticHost ?? context.hostName
        var spec = resticSpec(["snapshots", "--json", "--no-lock", "--latest", "1", "--host", thisHost], configuration, route: route)
        spec.standardOutput = .collect(limit: 1 << 20)
        guard let result = try? context.runner.run(spec, timeout: 30),
              result.status.isSuccess,
              let list = try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [[String: Any]] else {
            return [.fail("snapshots", "could not list the snapshots", fix: "run `cloud-backup restic snapshots` for details")]
        }
        // `--latest 1` keeps one snapshot per host *and set of paths*: the newest of those.
        let newest = list.compactMap { snapshot -> (date: Date, id: String)? in
            guard snapshot["hostname"] as? String == thisHost, let time = snapshot["time"] as? String,
                  let date = parseResticTime(time) else { return nil }
            return (date, snapshot["short_id"] as? String ?? "")
        }.max { $0.date < $1.date }
        guard let snapshot = newest else {
            return [.fail("snapshots", "no snapshot of this host (\(thisHost)) yet",
                          fix: "run `cloud-backup backup <dirs>` (and check the backup job's schedule and log)")]
        }
        let hours = Date().timeIntervalSince(snapshot.date) / 3600
        let age = hours < 1 ? "\(Int(hours * 60)) min ago" : hours < 48 ? String(format: "%.1f h ago", hours) : String(format: "%.0f days ago", hours / 24)
        let detail = "latest snapshot of \(thisHost): \(snapshot.id), \(age)"
        if hours > Double(configuration.snapshotMaximumAgeHours) {
            return [.fail("snapshots", detail + " (older than SNAPSHOT_MAX_AGE_HOURS=\(configuration.snapshotMaximumAgeHours))",
                          fix: "the backup job is not running or failing: check its log and Healthchecks")]
        }
        return [.pass("snapshots", detail)]
    }

    /// The REST server as jobs see it (ServerIdentity), so `status` never calls a server "up" that jobs
    /// would not use, nor "down" when it runs in another container.
    private func serverCheck(_ configuration: Configuration) -> StatusCheck {
        let port = configuration.restPort
        let (record, alive) = ServerRecord.read(stateDirectory: configuration.stateDirectory)
        switch RestServerProbe.probe(port: port, credentials: configuration.restCredentials) {
        case .restServer:
            switch ServerIdentity.check(port: port, destination: configuration.destination.rclonePath, stateDirectory: configuration.stateDirectory) {
            case .ours(let record):
                return .pass("REST server", "ready on 127.0.0.1:\(port) (start-server \(record.whereabouts)), serving \(record.destination)")
            case .notOurs(let reason):
                return .fail("REST server", "a restic REST server answers on 127.0.0.1:\(port), but \(reason); jobs go to the destination directly",
                             fix: "start this state directory's server (`cloud-backup start-server`), or move the other program off RESTIC_REST_PORT")
            }
        case .refusedCredentials:
            return .fail("REST server", "the server on 127.0.0.1:\(port) refuses RESTIC_REST_USERNAME/RESTIC_REST_PASSWORD",
                         fix: "give jobs the same credentials as the server")
        case .otherService(let status):
            return .fail("REST server", "something else answers on 127.0.0.1:\(port) (HTTP \(status))", fix: "choose another RESTIC_REST_PORT")
        case .nothing:
            if alive, let record, record.networkNamespace != Namespaces.network {
                return .pass("REST server", "runs in another container (\(record.whereabouts)), serving \(record.destination), \(record.state == .ready ? "ready" : "not ready"); commands in this container go to the destination directly. To check it from its own container: `docker exec --user user cloud-backup cloud-backup status`")
            }
            if alive, let record {
                return .fail("REST server", "start-server is running (\(record.whereabouts)) but not ready on 127.0.0.1:\(port)\(record.lastError.map { ": \($0)" } ?? "")",
                             fix: "see the server's log (`docker logs cloud-backup`); check the destination")
            }
            return .fail("REST server", "nothing answers on 127.0.0.1:\(port)",
                         fix: "start it: `cloud-backup start-server` (Docker: `docker compose up -d`, or `docker-compose up -d`)")
        }
    }

    /// The built-in schedule: each job's next run (the running server's, from schedule.json) and last
    /// result. Nothing when no *_SCHEDULE variable is set (ofelia or cron runs the jobs).
    private func scheduleChecks(_ configuration: Configuration) -> [StatusCheck] {
        let settings: ScheduleSettings
        switch ScheduleSettings.load(environment: environment, hostName: context.hostName) {
        case .success(let loaded): settings = loaded
        case .failure(let problem):
            return [.fail("schedule", problem.problems.joined(separator: " "),
                          fix: "fix these variables: start-server refuses to start with them (exit 78)")]
        }
        guard !settings.isEmpty else { return [] }
        let state = configuration.stateDirectory
        let record = ScheduleRecord.read(stateDirectory: state)
        let alive = ServerRecord.read(stateDirectory: state).alive
        var checks: [StatusCheck] = []
        if !alive {
            checks.append(.fail("schedule", "\(settings.jobs.map(\.variable).joined(separator: ", ")) set, but no start-server runs with the state directory \(state): nothing runs the scheduled jobs",
                                fix: "start it: `cloud-backup start-server` (Docker: `docker compose up -d`, or `docker-compose up -d`)"))
        }
        let now = Date()
        let zone = settings.timeZone
        for job in settings.jobs {
            let jobRecord = record?.jobs[job.name]
            // The running server's own next time when it schedules this expression; else what it would be.
            let recorded = alive && jobRecord?.expression == job.expression.text ? jobRecord?.nextRun : nil
            let next = (recorded.flatMap { $0 > now ? $0 : nil }) ?? settings.nextRun(of: job, after: now)
            var detail = "\(job.name) at \(job.variable)=\(job.expression.text): next run \(next.map { formatScheduleTime($0, timeZone: zone) } ?? "never")"
            var failedCode: Int32?
            if let jobRecord, let pid = jobRecord.runningPID, alive, let start = jobRecord.lastStart {
                detail += "; running since \(formatScheduleTime(start, timeZone: zone)) (PID \(pid))"
            } else if let jobRecord, let code = jobRecord.lastExitCode, let start = jobRecord.lastStart {
                let took = jobRecord.lastEnd.map { ", \(formatDuration($0.timeIntervalSince(start)))" } ?? ""
                detail += "; last run \(formatScheduleTime(start, timeZone: zone)) \(code == 0 ? "succeeded" : "failed with exit code \(code)")\(took)"
                if code != 0 { failedCode = code }
            } else {
                detail += "; no run yet"
            }
            if let skipped = jobRecord?.skippedRuns, skipped > 0 {
                detail += "; \(skipped) scheduled time\(skipped == 1 ? "" : "s") passed while the previous run was still going (not started twice)"
            }
            if let code = failedCode {
                checks.append(.fail("schedule", detail, fix: "see the server's log (`docker logs cloud-backup`) and the job's ping; run it by hand to see why: `cloud-backup \(job.commandArguments.map(shellQuoted).joined(separator: " "))`\(code == 75 ? " (75: the repository was busy)" : "")"))
            } else {
                checks.append(.pass("schedule", detail))
            }
        }
        return checks
    }

    /// DNS and a TCP connection to the check URL's host; never a request to the URL.
    private func pingHostCheck(name: String, url: URL) -> StatusCheck {
        let host = url.host ?? ""
        let port = url.port ?? (url.scheme == "https" ? 443 : 80)
        switch connectTCP(host: host, port: port, timeout: 5) {
        case .success:
            return .pass("monitoring", "\(name): \(host):\(port) reachable (DNS and TCP; no ping sent)")
        case .failure(let reason):
            return .fail("monitoring", "\(name): cannot reach \(host):\(port) (\(reason))",
                         fix: "check DNS, firewall or proxy towards \(host); pings are lost until then")
        }
    }
}

extension StatusReport {
    /// `cloud-backup status [--json]`: the checklist on stdout, exit 0 only if all is well.
    static func runCommand(json: Bool, environment: [String: String]) -> Int32 {
        let report = StatusReport(environment: environment, context: JobContext(environment: environment, log: Logger()))
        let checks = report.run()
        let text = json ? renderJSON(checks) : render(checks)
        print(Redactor.redact(text, secrets: ConfigurationLoader.secretValues(in: environment)), terminator: "")
        return checks.allSatisfy(\.ok) ? ExitCode.success : ExitCode.failure
    }

    /// The checklist as a person reads it: ✓/✗ per line, the fix under each ✗.
    public static func render(_ checks: [StatusCheck]) -> String {
        var lines: [String] = []
        for check in checks {
            lines.append("\(check.ok ? "✓" : "✗") \(check.name): \(check.detail)")
            if let fix = check.fix, !check.ok { lines.append("    fix: \(fix)") }
        }
        let failed = checks.filter { !$0.ok }.count
        lines.append(failed == 0 ? "all is well" : "\(failed) problem\(failed == 1 ? "" : "s") found")
        return lines.joined(separator: "\n") + "\n"
    }

    public static func renderJSON(_ checks: [StatusCheck]) -> String {
        let object: [String: Any] = [
            "ok": checks.allSatisfy(\.ok),
            "checks": checks.map { check -> [String: Any] in
                var entry: [String: Any] = ["name": check.name, "ok": check.ok, "detail": check.detail]
                if let fix = check.fix { entry["fix"] = fix }
                return entry
            },
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
