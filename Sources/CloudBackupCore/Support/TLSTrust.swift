import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Which certificate authorities the tool's own HTTPS requests trust (Healthchecks pings, STS, the
/// identity provider probe): the system's store, plus the PEM file `CLOUD_BACKUP_CA_FILE` when it is set.
///
/// On Linux URLSession (swift-corelibs-foundation) has no setting for this: its only knob, the
/// `URLSessionCertificateAuthorityInfoFile` variable, is compiled for Android only, and a delegate is
/// never asked about server trust. So `HTTPClient` hands the bundle to libcurl itself, for the
/// transfers it starts (see `CurlTrustHook`; docs/design.md#https-and-private-cas).
public struct TLSTrust: Sendable, Equatable {
    public static let setting = CertificateAuthority.variable

    /// The PEM file of the extra CA, or nil: the system's store alone.
    public var caFile: String?
    /// The variable it came from, for messages (`AWS_CA_BUNDLE` stands in when CLOUD_BACKUP_CA_FILE is unset).
    public var variable: String

    public init(caFile: String?, variable: String = TLSTrust.setting) {
        self.caFile = caFile.flatMap { $0.isEmpty ? nil : $0 }
        self.variable = variable
    }

    public static let systemOnly = TLSTrust(caFile: nil)

    /// The CA file an environment names, chosen as the configuration chooses it
    /// (`CertificateAuthority.named`: CLOUD_BACKUP_CA_FILE, else AWS_CA_BUNDLE; empty counts as unset).
    public init(environment: [String: String]) {
        let choice = CertificateAuthority.named(in: environment)
        self.init(caFile: choice?.path, variable: choice?.variable ?? Self.setting)
    }

    /// This process's own environment, for requests made without a job's context (the credential
    /// process rclone runs, the ping of a configuration error, the identity provider probe).
    public static var processDefault: TLSTrust {
        TLSTrust(environment: ProcessInfo.processInfo.environment)
    }

    /// Where the system's bundle is: the list swift-corelibs-foundation searches when libcurl has no
    /// default of its own (Debian/Ubuntu first, then Fedora/RHEL, SUSE, FreeBSD ports, Alpine/macOS).
    static let systemBundles = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                                "/usr/share/ssl/certs/ca-bundle.crt", "/usr/local/share/certs/ca-root-nss.crt", "/etc/ssl/cert.pem"]

    /// What libcurl is given for an HTTPS request to `host`: the system's bundle followed by the CA
    /// file (libcurl's CURLOPT_CAINFO_BLOB replaces its default bundle, so both go in), or nil when no
    /// CA file is set (URLSession's default then applies unchanged). A CA file that cannot be used is
    /// an error naming the setting and the host, never a silent fall-back to the system's store.
    func bundle(host: String, systemBundles: [String] = TLSTrust.systemBundles) throws -> Data? {
        guard let caFile else { return nil }
        let own: Data
        switch Self.read(caFile) {
        case .success(let data): own = data
        case .failure(let reason):
            throw HTTPTransport.Failure(description: "\(variable)=\(caFile) cannot be read (\(reason.reason)), so \(host) cannot be trusted through it",
                                        isTLS: true)
        }
        guard String(decoding: own, as: UTF8.self).contains("-----BEGIN CERTIFICATE-----") else {
            throw HTTPTransport.Failure(description: "\(variable)=\(caFile) holds no PEM certificate (-----BEGIN CERTIFICATE-----), so \(host) cannot be trusted through it",
                                        isTLS: true)
        }
        var bundle = systemBundles.lazy.compactMap { try? Data(contentsOf: URL(fileURLWithPath: $0)) }.first ?? Data()
        if let last = bundle.last, last != UInt8(ascii: "\n") { bundle.append(UInt8(ascii: "\n")) }
        bundle.append(own)
        return bundle
    }

    /// Says which CAs were trusted, for a certificate that none of them signed.
    var describedForFailure: String {
        guard let caFile else {
            return "only the system's CA store is trusted; for a private CA, set \(Self.setting) to its PEM file"
        }
        return "trusted are the system's CA store and \(variable)=\(caFile)"
    }

    struct Unreadable: Error { var reason: String }

    /// The file's bytes, or the system's reason it cannot be read (a directory is not a file).
    static func read(_ path: String) -> Result<Data, Unreadable> {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return .failure(Unreadable(reason: String(cString: strerror(errno)))) }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { return .failure(Unreadable(reason: String(cString: strerror(errno)))) }
        guard status.st_mode & S_IFMT == S_IFREG else { return .failure(Unreadable(reason: "not a regular file")) }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = Glibc.read(descriptor, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { return .failure(Unreadable(reason: String(cString: strerror(errno)))) }
            if count == 0 { return .success(data) }
            data.append(contentsOf: buffer[0..<count])
        }
    }
}
