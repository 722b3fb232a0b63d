import Foundation

/// One setting for a private certificate authority: `CLOUD_BACKUP_CA_FILE`, a PEM file of CA
/// certificates trusted *in addition to* the system's store, by every HTTPS client the tool starts or is.
/// Each gets it its own way, checked with the real tools:
///
/// - the tool's own requests (Healthchecks, STS, the identity provider probe): `TLSTrust` (system
///   bundle + the file, handed to libcurl under URLSession);
/// - rclone and restic (Go): `SSL_CERT_FILE`. Go then reads the file *and* the system's certificate
///   directories (/etc/ssl/certs), so the private CA is added to the system's. rclone's own
///   `--ca-cert`/`RCLONE_CA_CERT` (and restic's `--cacert`/`RESTIC_CACERT`) *replace* the system's CAs:
///   with rclone 1.60, RCLONE_CA_CERT=private-ca.pem fails every public endpoint, and restic 0.14 has no
///   RESTIC_CACERT at all;
/// - oidc-agent: the account's `cert_path` (`oidc-gen --cert-path`, kept current by `OidcAgent`);
///   libcurl then also keeps its CA directory /etc/ssl/certs, so that too adds to the system's;
/// - `aws-credential-process` (run by rclone with rclone's environment): `CLOUD_BACKUP_CA_FILE` itself.
///
/// `AWS_CA_BUNDLE` never reaches a child: rclone 1.60 fails every S3 call with
/// `LoadCustomCABundleError … unsupported transport` when it is set. Set alone (no CLOUD_BACKUP_CA_FILE),
/// it is taken as the CA file, since it says the same thing for S3 and STS; the configuration notes it.
public enum CertificateAuthority {
    public static let variable = "CLOUD_BACKUP_CA_FILE"
    public static let awsVariable = "AWS_CA_BUNDLE"

    /// The CA file in use and the variable it came from.
    public struct Choice: Sendable, Equatable {
        public var path: String
        public var variable: String
    }

    /// The CA file the environment names (CLOUD_BACKUP_CA_FILE, else AWS_CA_BUNDLE), unchecked: the
    /// credential process reads its environment, which the checked configuration made.
    public static func named(in environment: [String: String]) -> Choice? {
        for name in [variable, awsVariable] {
            if let path = environment[name], !path.isEmpty { return Choice(path: path, variable: name) }
        }
        return nil
    }

    /// The CA file, checked: an absolute path to a readable regular file holding at least one PEM
    /// certificate. Problems are added to `problems` (reported with the others, exit 78).
    static func choose(in environment: [String: String], readFile: FileReader, problems: inout [String]) -> Choice? {
        guard let choice = named(in: environment) else { return nil }
        if let problem = problem(with: choice, readFile: readFile) {
            problems.append(problem)
            return nil
        }
        return choice
    }

    static func problem(with choice: Choice, readFile: FileReader) -> String? {
        let path = choice.path
        let name = choice.variable == variable ? "\(variable)=\(path)" : "\(awsVariable)=\(path) (used as \(variable), which is not set)"
        let expected = "it should be the PEM file of the CA certificate(s) that signed your servers' certificates (identity provider, storage, Healthchecks), trusted in addition to the system's"
        let unset = choice.variable == variable ? "" : " Or unset \(awsVariable): cloud-backup never passes it on (rclone 1.60 fails every S3 call when it is set)."
        guard path.hasPrefix("/") else {
            return "\(name): must be an absolute path (the tools that read it run in other directories); \(expected).\(unset)"
        }
        switch ConfiguredFile.read(path, readFile: readFile) {
        case .notAFile(let kind):
            let directory = kind == "a directory" ? " (for several CAs, put their certificates one after the other in one file)" : ""
            return "\(name) is \(kind), not a file\(directory); \(expected).\(unset)"
        case .missing:
            return "\(name): no such file; \(expected).\(unset)"
        case .unreadable(let reason):
            return "\(name): cannot read the file (\(reason)); \(expected).\(unset)"
        case .content(let text):
            guard containsCertificate(text) else {
                return "\(name): the file holds no PEM certificate (-----BEGIN CERTIFICATE-----); \(expected). A DER (binary) certificate converts with `openssl x509 -inform der -in ca.der -out ca.pem`.\(unset)"
            }
            return nil
        }
    }

    /// At least one `-----BEGIN CERTIFICATE-----` block whose body is base64.
    static func containsCertificate(_ text: String) -> Bool {
        var rest = Substring(text)
        while let begin = rest.range(of: "-----BEGIN CERTIFICATE-----") {
            guard let end = rest.range(of: "-----END CERTIFICATE-----", range: begin.upperBound..<rest.endIndex) else { return false }
            let body = rest[begin.upperBound..<end.lowerBound].filter { !$0.isWhitespace }
            if !body.isEmpty, Data(base64Encoded: String(body)) != nil { return true }
            rest = rest[end.upperBound...]
        }
        return false
    }

    /// What the configuration says once about a CA file taken from AWS_CA_BUNDLE.
    static func notes(for choice: Choice?, environment: [String: String]) -> [String] {
        guard let aws = environment[awsVariable], !aws.isEmpty else { return [] }
        if choice?.variable == awsVariable {
            return ["\(variable) is not set: using \(awsVariable)=\(aws) as the CA file for every TLS connection (identity provider, storage, Healthchecks), "
                    + "in addition to the system's CAs; \(awsVariable) itself is not passed on (rclone 1.60 fails every S3 call when it is set)"]
        }
        return []
    }

    /// The variables every child gets for `path` (nil: none; the system's store alone). SSL_CERT_FILE is
    /// the one the Go tools add to the system's CAs; CLOUD_BACKUP_CA_FILE is for `aws-credential-process`.
    static func childVariables(_ path: String?) -> [String: String] {
        guard let path else { return [:] }
        return [variable: path, "SSL_CERT_FILE": path]
    }

    /// Where oidc-gen 4.2.6 looks for the system's bundle when given no --cert-path (its own list and
    /// order); an account with one of these trusts the system's store.
    public static let oidcAgentSystemBundles = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                                                "/etc/ssl/ca-bundle.pem", "/etc/pki/tls/cacert.pem"]
}
