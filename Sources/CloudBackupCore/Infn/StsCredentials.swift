import Foundation

/// Short-lived S3 keys from STS AssumeRoleWithWebIdentity.
public struct TemporaryCredentials: Sendable, Equatable {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String
    public var expiration: Date
}

/// The STS exchange, as INFN's patched rclone does it (docs/design.md#infn-credential-chain), on the RGW endpoint.
public enum StsExchange {
    /// The form body. The token goes in the body, not the URL (servers log URLs).
    public static func formBody(roleName: String, webIdentityToken: String, durationSeconds: Int) -> String {
        let fields = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", "arn:aws:iam:::role/\(roleName)"),
            ("RoleSessionName", roleName),
            ("WebIdentityToken", webIdentityToken),
            ("DurationSeconds", "\(durationSeconds)"),
        ]
        return fields.map { "\($0.0)=\(PercentEncoding.formValue($0.1))" }.joined(separator: "&")
    }

    /// Reads the XML answer: the credentials, or STS's error code and message.
    public static func parse(status: Int, body: String, settings: InfnSettings) throws -> TemporaryCredentials {
        func element(_ name: String) -> String? {
            guard let start = body.range(of: "<\(name)>"), let end = body.range(of: "</\(name)>", range: start.upperBound..<body.endIndex) else { return nil }
            return String(body[start.upperBound..<end.lowerBound]).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        guard status == 200, let key = element("AccessKeyId"), let secret = element("SecretAccessKey"),
              let token = element("SessionToken"), let expirationText = element("Expiration") else {
            throw refusal(code: element("Code") ?? "HTTP \(status)", message: element("Message") ?? "", settings: settings)
        }
        guard let expiration = parseResticTime(expirationText) else {
            throw CloudBackupError.infn("STS answered an expiration that is not a date (\(expirationText))", fix: "report this to the storage's operators")
        }
        return TemporaryCredentials(accessKeyID: key, secretAccessKey: secret, sessionToken: xmlUnescaped(token), expiration: expiration)
    }

    /// STS's refusal in words. RGW 16.2 answers every refused login with a bare 403 AccessDenied (its
    /// reason only in the gateway's own log), so the message lists every setting that can cause it,
    /// each with the value used.
    static func refusal(code: String, message: String, settings: InfnSettings) -> CloudBackupError {
        let what = "the storage's STS refused the login token (\(code)\(message.isEmpty ? "" : ": \(message)"))"
        guard code == "AccessDenied" || code == "HTTP 403" else {
            return .infn(what, fix: "check STS_ROLE_NAME=\(settings.roleName) and OIDC_AUDIENCE=\(settings.audience); if your login expired, run `cloud-backup reauth`")
        }
        return .infn("""
            \(what) at \(settings.s3Endpoint.absoluteString). The storage gives this one answer for every refused login; the causes are: \
            the role STS_ROLE_NAME=\(settings.roleName) does not exist there or does not trust this identity provider (INFN Cloud: IAMaccess), \
            the token's audience OIDC_AUDIENCE=\(settings.audience) is not the one the role expects (INFN Cloud: object), \
            the identity provider OIDC_ISSUER_URL=\(settings.issuer.absoluteString) is not the one the storage trusts, \
            or the login was revoked or expired
            """,
                     fix: "check STS_ROLE_NAME, OIDC_AUDIENCE and OIDC_ISSUER_URL against your storage's settings (unset, they are INFN Cloud's); if they are right, run `cloud-backup reauth`")
    }

    static func xmlUnescaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
    }

    /// The POST to STS, through URLSession (`HTTPClient`). HTTPS trusts the system's CAs and the
    /// settings' CA file (`CLOUD_BACKUP_CA_FILE`) unless `trust` says otherwise. Any failure to get an
    /// answer is the login's error (exit 77), naming the endpoint; a certificate no trusted CA signed
    /// names the CA setting too.
    public static func request(settings: InfnSettings, webIdentityToken: String, timeout: Double = 30,
                               trust: TLSTrust? = nil) throws -> TemporaryCredentials {
        let trust = trust ?? TLSTrust(caFile: settings.certificateAuthorityFile)
        let body = formBody(roleName: settings.roleName, webIdentityToken: webIdentityToken, durationSeconds: settings.stsDurationSeconds)
        let answer: HTTPClient.Answer
        do {
            answer = try HTTPClient.exchange(url: settings.s3Endpoint, body: Data(body.utf8), contentType: "application/x-www-form-urlencoded",
                                             timeout: timeout, answerLimit: 64 * 1024, trust: trust)
        } catch let failure as HTTPTransport.Failure where failure.isTLS {
            throw CloudBackupError.infn("cannot reach the storage's STS at \(settings.s3Endpoint.absoluteString) (\(failure.description))",
                                        fix: "set \(TLSTrust.setting) to the PEM file of the CA that signed the storage's certificate (S3_ENDPOINT_URL), or add that CA to the system's store")
        } catch {
            throw CloudBackupError.infn("cannot reach the storage's STS at \(settings.s3Endpoint.absoluteString) (\(error))",
                                        fix: "check the network path to the storage (S3_ENDPOINT_URL)")
        }
        return try parse(status: answer.status, body: answer.body, settings: settings)
    }

    /// What an AWS `credential_process` prints. The expiration is moved `marginSeconds` earlier, so
    /// rclone (which renews only after it) never uses keys in their last minutes.
    public static func credentialProcessJSON(_ credentials: TemporaryCredentials, marginSeconds: Int, now: Date = Date()) -> String {
        var reported = credentials.expiration.addingTimeInterval(-Double(marginSeconds))
        if reported < now.addingTimeInterval(30) { reported = min(credentials.expiration, now.addingTimeInterval(30)) }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        let object: [String: Any] = [
            "Version": 1,
            "AccessKeyId": credentials.accessKeyID,
            "SecretAccessKey": credentials.secretAccessKey,
            "SessionToken": credentials.sessionToken,
            "Expiration": formatter.string(from: reported),
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

/// The refresh token's lifetime. INDIGO IAM issues refresh tokens as unsigned JWTs whose payload has
/// `exp` when the client has a refresh-token validity; no `exp` means it does not expire.
public enum RefreshTokenLifetime: Equatable, Sendable {
    case expires(Date)
    case never
    case unreadable(String)

    public static func of(_ token: String) -> RefreshTokenLifetime {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 2 else { return .unreadable("the refresh token is not a JWT (no payload to read its expiry from)") }
        var base64 = parts[1].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64),
              let payload = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            return .unreadable("the refresh token's payload is not JSON")
        }
        guard let exp = payload["exp"] else { return .never }
        guard let seconds = (exp as? NSNumber)?.doubleValue else { return .unreadable("the refresh token's exp is not a number") }
        return .expires(Date(timeIntervalSince1970: seconds))
    }

    /// Days left, to the nearest day: a fresh 30-day login read a second later has 29.99 days left,
    /// and "29" would read as a day lost. The one number to show wherever the days left are shown,
    /// and the one REFRESH_TOKEN_MIN_DAYS is compared with (a message never says "7 days left, fewer
    /// than 7").
    public static func daysLeft(until expiry: Date, now: Date = Date()) -> Int {
        max(0, Int((expiry.timeIntervalSince(now) / 86_400).rounded()))
    }

    /// "30 days", "1 day", "less than a day" (what rounds to 0 while not yet expired).
    public static func describe(daysLeft days: Int) -> String {
        switch days {
        case ...0: return "less than a day"
        case 1: return "1 day"
        default: return "\(days) days"
        }
    }
}
