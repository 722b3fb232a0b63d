import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

/// HTTP through URLSession (FoundationNetworking; libcurl underneath on Linux). One request at a time
/// per process, each bounded by its timeout whatever URLSession does: a request URLSession has not
/// finished by then is cancelled and abandoned, and the caller gets "no answer". URLSession's own
/// timeout is only the second line: corelibs keeps whole seconds of it, and a transfer it fails to end
/// (a stuck resolver or work queue) must still not hold a job past its ping budget.
public enum HTTPClient {
    public struct Answer: Sendable {
        public var status: Int
        public var pingBodyLimit: String
        public var body: String
    }

    /// Requests one at a time: the CA bundle libcurl is handed is the one of the request under way.
    private static let oneAtATime = NSLock()

    /// One session for the life of the process, never invalidated: swift-corelibs-foundation aborts the
    /// process ("Object … of class _MultiHandle deallocated with non-zero retain count 2") when a
    /// session made for one request is invalidated and released while its libcurl work queue still
    /// holds it (seen in the image, trixie's libcurl, in `aws-credential-process`). Ephemeral: no
    /// cookies, cache or credential store. Each request carries its own timeout.
    private static let router = Router()
    private static let session: URLSession = {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        configuration.urlCache = nil
        configuration.httpCookieStorage = nil
        configuration.httpShouldSetCookies = false
        configuration.urlCredentialStorage = nil
        configuration.timeoutIntervalForResource = 24 * 3600
        return URLSession(configuration: configuration, delegate: router, delegateQueue: nil)
    }()

    /// A GET (`body` nil) or a POST; the answer's body is kept up to `answerLimit` bytes. Redirects are
    /// not followed (a 3xx is the answer). Any failure is an `HTTPTransport.Failure` saying why.
    ///
    /// In the cloud-backup binary the request is made by a child process of the same binary
    /// (`isolatedExecutable`, the hidden `http-exchange` subcommand): swift-corelibs-foundation ends the
    /// whole process with a fatal error ("Transfer completed, but there's no response") when a server
    /// sends a status line and then closes the connection inside the headers, and a ping must never
    /// take a backup down with it. The child is killed at the deadline; a crash or a kill is a failed
    /// request like any other (docs/design.md#http-urlsession-and-what-it-costs).
    public static func exchange(url: URL, body: Data?, contentType: String = "text/plain; charset=utf-8",
                                timeout: Double, answerLimit: Int = 0, trust: TLSTrust = .processDefault) throws -> Answer {
        if let executable = isolatedExecutable.withLock({ $0 }) {
            return try IsolatedExchange.run(executable: executable,
                                            request: .init(url: url.absoluteString, body: body, contentType: contentType, timeout: timeout,
                                                           answerLimit: answerLimit, caFile: trust.caFile, caVariable: trust.variable))
        }
        return try exchange(url: url, body: body, contentType: contentType, timeout: timeout, answerLimit: answerLimit, trust: trust, urlSessionTimeout: nil)
    }

    /// The binary whose `http-exchange` subcommand makes requests in a child process; nil: in this
    /// process. Set by `CommandLineInterface` to the running binary (tests set it to the built one).
    static let isolatedExecutable = Locked<String?>(nil)

    /// `urlSessionTimeout`: what URLSession itself is told (default: the same as ours); tests give it
    /// longer, to show that our own bound holds alone.
    static func exchange(url: URL, body: Data?, contentType: String, timeout: Double, answerLimit: Int, trust: TLSTrust,
                         urlSessionTimeout: Double?) throws -> Answer {
        guard let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https", let host = url.host, !host.isEmpty else {
            throw HTTPTransport.Failure(description: "not an http or https URL")
        }
        let authority = hostAndPort(url)
        let bundle = scheme == "https" ? try trust.bundle(host: authority) : nil
        let seconds = max(0.05, timeout)
        // corelibs keeps whole seconds of a request's timeout (0.6 s becomes 0: an instant "timed out"),
        // so URLSession gets ours rounded up, and our own wait below ends the request on time.
        let sessionSeconds = (urlSessionTimeout ?? seconds).rounded(.up)

        var request = URLRequest(url: url, cachePolicy: .reloadIgnoringLocalCacheData, timeoutInterval: sessionSeconds)
        request.httpMethod = body == nil ? "GET" : "POST"
        request.setValue("cloud-backup", forHTTPHeaderField: "User-Agent")
        if let body {
            request.setValue(contentType, forHTTPHeaderField: "Content-Type")
            request.httpBody = body
        }
        oneAtATime.lock()
        defer { oneAtATime.unlock() }
        CurlTrustHook.current.withLock { $0 = bundle.map { CurlTrustHook.Bundle(pem: $0, caFile: trust.caFile ?? "") } }
        defer { CurlTrustHook.current.withLock { $0 = nil } }

        let exchange = Exchange(answerLimit: max(0, answerLimit))
        let task = session.dataTask(with: request)
        router.begin(task.taskIdentifier, exchange)
        defer { router.end(task.taskIdentifier) }
        task.resume()
        guard exchange.done.wait(timeout: .now() + seconds) == .success else {
            // Our bound, not URLSession's: give up on the request, whatever it is doing.
            task.cancel()
            throw HTTPTransport.Failure(description: "no answer within \(formatSeconds(seconds)) s")
        }
        let outcome = exchange.state.withLock { $0 }
        if let error = outcome.error {
            throw failure(error, authority: authority, timeout: seconds, trust: trust)
        }
        guard let status = outcome.status else { throw HTTPTransport.Failure(description: "the server closed the connection without an answer") }
        return Answer(status: status, pingBodyLimit: outcome.pingBodyLimit, body: String(decoding: outcome.body, as: UTF8.self))
    }

    /// `host:port` as a message names a server (the port when the URL gives one).
    static func hostAndPort(_ url: URL) -> String {
        let host = url.host ?? "?"
        let shown = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return url.port.map { "\(shown):\($0)" } ?? shown
    }

    static func formatSeconds(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(format: "%.1f", seconds)
    }

    /// URLSession's error in words: a timeout, a certificate none of the trusted CAs signed (naming the
    /// host and `CLOUD_BACKUP_CA_FILE`), or libcurl's own sentence.
    static func failure(_ error: Error, authority: String, timeout: Double, trust: TLSTrust) -> HTTPTransport.Failure {
        let nsError = error as NSError
        var text = nsError.localizedDescription
        while text.hasSuffix(".") { text.removeLast() }
        if nsError.domain == NSURLErrorDomain && (nsError.code == NSURLErrorTimedOut || nsError.code == NSURLErrorCancelled) {
            return HTTPTransport.Failure(description: "no answer within \(formatSeconds(timeout)) s")
        }
        // corelibs reports most TLS failures as NSURLErrorUnknown with libcurl's text ("SSL certificate
        // problem: unable to get local issuer certificate"), some with the -120x codes.
        let tlsCodes = [NSURLErrorSecureConnectionFailed, NSURLErrorServerCertificateHasBadDate, NSURLErrorServerCertificateUntrusted,
                        NSURLErrorServerCertificateHasUnknownRoot, NSURLErrorServerCertificateNotYetValid,
                        NSURLErrorClientCertificateRejected, NSURLErrorClientCertificateRequired]
        let lowered = text.lowercased()
        if tlsCodes.contains(nsError.code) || lowered.contains("ssl") || lowered.contains("certificate") || lowered.contains("tls") {
            return HTTPTransport.Failure(description: "TLS: the certificate of \(authority) is not trusted (\(text)); \(trust.describedForFailure)", isTLS: true)
        }
        return HTTPTransport.Failure(description: text.isEmpty ? "request failed (\(nsError.domain) \(nsError.code))" : text)
    }
}

/// The session's delegate: hands each callback to the exchange of its task (a cancelled request's
/// late callbacks find none and are dropped).
private final class Router: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    private let exchanges = Locked([Int: Exchange]())

    func begin(_ task: Int, _ exchange: Exchange) { exchanges.withLock { $0[task] = exchange } }
    func end(_ task: Int) { _ = exchanges.withLock { $0.removeValue(forKey: task) } }
    private func exchange(_ task: URLSessionTask) -> Exchange? { exchanges.withLock { $0[task.taskIdentifier] } }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        exchange(dataTask)?.received(response)
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        exchange(dataTask)?.received(data)
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                    newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
        completionHandler(nil)
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        exchange(task)?.completed(error: error, response: task.response)
    }
}

/// One request's answer, filled in by the session's callbacks.
private final class Exchange: @unchecked Sendable {
    struct State: Sendable {
        var status: Int?
        var pingBodyLimit = ""
        var body = Data()
        var error: Error?
    }

    let state = Locked(State())
    let done = DispatchSemaphore(value: 0)
    let answerLimit: Int

    init(answerLimit: Int) {
        self.answerLimit = answerLimit
    }

    func received(_ response: URLResponse) {
        if let http = response as? HTTPURLResponse {
            // Digits only, as Healthchecks sends it ("Ping-Body-Limit: 100000").
            let limit = (http.value(forHTTPHeaderField: "Ping-Body-Limit") ?? "").trimmingCharacters(in: .whitespaces).prefix { $0.isASCII && $0.isNumber }
            state.withLock {
                $0.status = http.statusCode
                $0.pingBodyLimit = String(limit)
            }
        }
    }

    func received(_ data: Data) {
        state.withLock { state in
            let room = answerLimit - state.body.count
            if room > 0 { state.body.append(data.prefix(room)) }
        }
    }

    func completed(error: Error?, response: URLResponse?) {
        state.withLock { state in
            state.error = error
            if error == nil, state.status == nil, let http = response as? HTTPURLResponse { state.status = http.statusCode }
        }
        done.signal()
    }
}

/// Hands libcurl the CA bundle of `CLOUD_BACKUP_CA_FILE` for the transfers URLSession starts.
///
/// swift-corelibs-foundation configures each libcurl handle itself and offers no trust setting on
/// Linux, then calls `curl_multi_add_handle`. This module defines that function: it sets
/// CURLOPT_CAINFO_BLOB (the system's bundle plus the CA file) on the handle when the request under way
/// asks for it, then calls libcurl's own. The static build binds URLSession's call to it at link time;
/// other builds export it (Package.swift: `--export-dynamic-symbol`) so the dynamic loader does.
/// `HTTPClient.exchange` sets `current` around each request (requests are one at a time).
enum CurlTrustHook {
    struct Bundle: Sendable {
        var pem: Data
        var caFile: String
    }

    static let current = Locked<Bundle?>(nil)
    /// Whether the hook ran since the process started (tests check that URLSession went through it).
    static let calls = Locked(0)

    typealias AddHandle = @convention(c) (OpaquePointer?, OpaquePointer?) -> Int32
    // curl_easy_setopt is variadic; its pointer-argument form is called through this prototype (the
    // same registers on x86-64 and AArch64 Linux).
    typealias SetOptionPointer = @convention(c) (OpaquePointer?, Int32, UnsafeRawPointer?) -> Int32

    static let optionCAInfo: Int32 = 10_065      // CURLOPT_CAINFO (CURLOPTTYPE_STRINGPOINT + 65)
    static let optionCAInfoBlob: Int32 = 40_309  // CURLOPT_CAINFO_BLOB (CURLOPTTYPE_BLOB + 309), libcurl 7.77+
    static let multiInternalError: Int32 = 4     // CURLM_INTERNAL_ERROR

    /// struct curl_blob { void *data; size_t len; unsigned int flags; }
    struct CurlBlob {
        var data: UnsafeMutableRawPointer?
        var length: Int
        var flags: UInt32
    }

    /// libcurl's own functions: the next definition after ours, else libcurl looked up by name.
    static let library: (add: AddHandle?, setOption: SetOptionPointer?) = {
        func find(_ name: String) -> UnsafeMutableRawPointer? {
            if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: -1), name) { return symbol }  // RTLD_NEXT
            for file in ["libcurl.so.4", "libcurl-gnutls.so.4", "libcurl.so"] {
                if let handle = dlopen(file, RTLD_NOW | RTLD_NOLOAD) ?? dlopen(file, RTLD_NOW), let symbol = dlsym(handle, name) { return symbol }
            }
            return nil
        }
        return (find("curl_multi_add_handle").map { unsafeBitCast($0, to: AddHandle.self) },
                find("curl_easy_setopt").map { unsafeBitCast($0, to: SetOptionPointer.self) })
    }()

    static func apply(to easy: OpaquePointer?) {
        calls.withLock { $0 += 1 }
        guard let easy, let bundle = current.withLock({ $0 }), let setOption = library.setOption else { return }
        var pem = bundle.pem
        let status = pem.withUnsafeMutableBytes { bytes -> Int32 in
            var blob = CurlBlob(data: bytes.baseAddress, length: bytes.count, flags: 1)  // CURL_BLOB_COPY
            return withUnsafePointer(to: &blob) { setOption(easy, optionCAInfoBlob, UnsafeRawPointer($0)) }
        }
        // A libcurl older than 7.77: the CA file alone (libcurl's CA directory, the system's, stays set).
        if status != 0 {
            _ = bundle.caFile.withCString { setOption(easy, optionCAInfo, UnsafeRawPointer($0)) }
        }
    }
}

/// libcurl's `curl_multi_add_handle`, as swift-corelibs-foundation calls it for every transfer: the
/// trust of the request under way is set on the handle first (see `CurlTrustHook`).
@_cdecl("curl_multi_add_handle")
public func _cloudBackupCurlMultiAddHandle(_ multi: OpaquePointer?, _ easy: OpaquePointer?) -> Int32 {
    CurlTrustHook.apply(to: easy)
    guard let add = CurlTrustHook.library.add else { return CurlTrustHook.multiInternalError }
    return add(multi, easy)
}

/// One request made by a child process (`cloud-backup http-exchange /dev/fd/N`): the request goes
/// through a pipe (a ping body may hold parts of a job's output, so never argv or the environment),
/// the answer comes back as JSON on the child's stdout.
enum IsolatedExchange {
    static let commandName = "http-exchange"

    struct Request: Codable, Sendable {
        var url: String
        var body: Data?
        var contentType: String
        var timeout: Double
        var answerLimit: Int
        var caFile: String?
        var caVariable: String
    }

    struct Reply: Codable, Sendable {
        var status: Int?
        var pingBodyLimit: String?
        var body: String?
        var failure: String?
        var isTLS: Bool?
    }

    /// The parent's side: spawn, hand the request over, wait at most the timeout and a little more.
    static func run(executable: String, request: Request, runner: any ProcessRunning = SystemProcessRunner()) throws -> HTTPClient.Answer {
        let payload = try JSONEncoder().encode(request)
        var descriptors: [Int32] = [-1, -1]
        guard systemPipe2(&descriptors, O_CLOEXEC) == 0 else { throw HTTPTransport.Failure(description: "cannot create a pipe (\(String(cString: strerror(errno))))") }
        let (readEnd, writeEnd) = (descriptors[0], descriptors[1])
        defer { close(readEnd) }
        // Written while the child reads (a body may exceed the pipe's 64 kB); a child that dies early
        // closes its end and the write ends with EPIPE (SIGPIPE is ignored by the tool).
        let written = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            payload.withUnsafeBytes { writeFully(writeEnd, $0.baseAddress!, $0.count) }
            close(writeEnd)
            written.signal()
        }
        var spec = ProcessSpec(executable: executable, arguments: [commandName, "/dev/fd/\(readEnd)"],
                               environment: ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"],
                               standardOutput: .collect(limit: 4 << 20), standardError: .collect(limit: 64 << 10))
        spec.inheritedDescriptors = [readEnd]
        let seconds = max(0.05, request.timeout)
        let result: ProcessResult?
        do {
            result = try runner.run(spec, timeout: seconds + 1)
        } catch {
            throw HTTPTransport.Failure(description: "cannot start the HTTP client (\(error))")
        }
        _ = written.wait(timeout: .now() + 1)
        guard let result else {
            throw HTTPTransport.Failure(description: "no answer within \(HTTPClient.formatSeconds(seconds)) s")
        }
        guard result.status.isSuccess, let reply = try? JSONDecoder().decode(Reply.self, from: Data(result.standardOutput.utf8)) else {
            let said = lastLine(result.standardError).map { ": \($0)" } ?? ""
            throw HTTPTransport.Failure(description: "the HTTP client ended without an answer (\(result.status))\(said)")
        }
        if let failure = reply.failure { throw HTTPTransport.Failure(description: failure, isTLS: reply.isTLS ?? false) }
        guard let status = reply.status else { throw HTTPTransport.Failure(description: "the HTTP client gave no status") }
        return HTTPClient.Answer(status: status, pingBodyLimit: reply.pingBodyLimit ?? "", body: reply.body ?? "")
    }

    /// The child's side: read the request from the descriptor, make it here, print the reply.
    static func serve(arguments: [String]) -> Int32 {
        guard arguments.count == 1, arguments[0].hasPrefix("/dev/fd/"), let descriptor = Int32(arguments[0].dropFirst("/dev/fd/".count)) else {
            writeStandardError("cloud-backup: error: http-exchange is run by cloud-backup itself, with /dev/fd/N\n")
            return ExitCode.usage
        }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while data.count <= 16 << 20 {
            let count = read(descriptor, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            data.append(contentsOf: buffer[0..<count])
        }
        close(descriptor)
        guard let request = try? JSONDecoder().decode(Request.self, from: data), let url = URL(string: request.url) else {
            writeStandardError("cloud-backup: error: http-exchange got no readable request\n")
            return ExitCode.usage
        }
        var reply = Reply()
        do {
            let answer = try HTTPClient.exchange(url: url, body: request.body, contentType: request.contentType, timeout: request.timeout,
                                                 answerLimit: request.answerLimit, trust: TLSTrust(caFile: request.caFile, variable: request.caVariable),
                                                 urlSessionTimeout: nil)
            reply.status = answer.status
            reply.pingBodyLimit = answer.pingBodyLimit
            reply.body = answer.body
        } catch let failure as HTTPTransport.Failure {
            reply.failure = failure.description
            reply.isTLS = failure.isTLS
        } catch {
            reply.failure = "\(error)"
        }
        guard let encoded = try? JSONEncoder().encode(reply) else { return ExitCode.software }
        encoded.withUnsafeBytes { writeFully(STDOUT_FILENO, $0.baseAddress!, $0.count) }
        return ExitCode.success
    }
}
