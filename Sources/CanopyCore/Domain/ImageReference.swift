/// An image reference in the Docker reference grammar: `[DOMAIN[:PORT]/]PATH[:TAG][@sha256:HEX]`.
///
/// Stricter than the grammar in three ways, so that a reference is always safe to show, store and hand to an
/// engine: no uppercase anywhere (tags included), no `..` anywhere, and only `sha256` digests. At most 255 bytes.
public struct ImageReference: Sendable, Hashable, CustomStringConvertible {
    /// The registry (`ghcr.io`, `localhost:5000`), when the reference names one.
    public var domain: String?
    /// The repository path (`library/busybox`, `tensorflow`): components joined by `/`.
    public var path: String
    /// The tag, when given.
    public var tag: String?
    /// The digest (`sha256:` and 64 hex digits), when given.
    public var digest: String?

    /// The tag a reference without one means.
    public static let defaultTag = "latest"
    /// The longest reference, in bytes.
    public static let maxLength = 255
    /// The rule, as errors state it.
    public static let rule =
        "an image reference is [REGISTRY/]NAME[:TAG][@sha256:DIGEST] in lowercase, e.g. busybox:1.36 or ghcr.io/org/app:v2 "
        + "(name components of letters and digits joined by '.', '_', '__' or '-'; at most \(maxLength) characters)"

    /// Creates a reference from its parts (not checked: use `parse`).
    public init(domain: String? = nil, path: String, tag: String? = nil, digest: String? = nil) {
        self.domain = domain
        self.path = path
        self.tag = tag
        self.digest = digest
    }

    /// The tag, or `latest`.
    public var effectiveTag: String { tag ?? Self.defaultTag }

    /// The reference as written: `domain/path:tag@digest`, parts left out when absent.
    public var description: String {
        var s = domain.map { $0 + "/" } ?? ""
        s += path
        if let tag { s += ":" + tag }
        if let digest { s += "@" + digest }
        return s
    }

    /// Parses a reference; throws an invalid-argument error naming `field` and saying what is wrong.
    public static func parse(_ text: String, field: String = "image") throws(CanopyError) -> ImageReference {
        switch read(text) {
        case .success(let r): return r
        case .failure(let problem):
            let shown = text.utf8.count > 80 ? String(text.prefix(60)) + "..." : text
            throw CanopyError.invalid(
                field,
                "\"\(shown.unicodeScalars.map { $0.value < 32 || $0.value == 127 ? "?" : String($0) }.joined())\" is not a valid image reference: \(problem.why); \(rule)"
            )
        }
    }

    /// Why a text is not a reference.
    public struct Problem: Error, Sendable, Equatable {
        /// The reason, for people.
        public var why: String
    }

    /// Parses a reference, or says why it is not one.
    public static func read(_ text: String) -> Result<ImageReference, Problem> {
        func fail(_ why: String) -> Result<ImageReference, Problem> { .failure(Problem(why: why)) }
        let bytes = Array(text.utf8)
        if bytes.isEmpty { return fail("it is empty") }
        if bytes.count > maxLength { return fail("it is longer than \(maxLength) characters") }
        for b in bytes {
            if b <= 32 || b == 127 { return fail("it contains white space or a control character") }
            if b >= 65 && b <= 90 { return fail("it contains uppercase letters") }
            if b >= 128 { return fail("it contains a character outside ASCII") }
        }
        if text.contains("..") { return fail("it contains \"..\"") }
        var rest = Substring(text)
        var digest: String?
        if let at = rest.firstIndex(of: "@") {
            let d = rest[rest.index(after: at)...]
            guard d.hasPrefix("sha256:"), d.utf8.count == 71, d.utf8.dropFirst(7).allSatisfy(isHex) else {
                return fail("a digest is sha256: and 64 hexadecimal digits")
            }
            digest = String(d)
            rest = rest[..<at]
        }
        var tag: String?
        if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            let t = rest[rest.index(after: colon)...]
            guard isTag(t) else { return fail("a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'") }
            tag = String(t)
            rest = rest[..<colon]
        }
        var components = rest.split(separator: "/", omittingEmptySubsequences: false)
        var domain: String?
        if components.count > 1, let first = components.first, first.contains(".") || first.contains(":") || first == "localhost" {
            guard isDomain(first) else { return fail("\"\(first)\" is not a registry host[:port]") }
            domain = String(first)
            components.removeFirst()
        }
        if components.isEmpty || components.contains(where: \.isEmpty) { return fail("it has an empty name component") }
        for c in components where !isPathComponent(c) {
            return fail("\"\(c)\" is not a name component (lowercase letters and digits, joined by '.', '_', '__' or '-')")
        }
        return .success(ImageReference(domain: domain, path: components.joined(separator: "/"), tag: tag, digest: digest))
    }

    static func isHex(_ b: UInt8) -> Bool { (48...57).contains(b) || (97...102).contains(b) }
    static func isAlnum(_ b: UInt8) -> Bool { (48...57).contains(b) || (97...122).contains(b) }

    /// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
    public static func isPathComponent(_ s: Substring) -> Bool {
        let b = Array(s.utf8)
        var i = 0
        func run() -> Bool {
            let start = i
            while i < b.count, isAlnum(b[i]) { i += 1 }
            return i > start
        }
        guard run() else { return false }
        while i < b.count {
            switch b[i] {
            case 46:  // .
                i += 1
            case 95:  // _ or __
                i += 1
                if i < b.count, b[i] == 95 { i += 1 }
            case 45:  // one or more -
                while i < b.count, b[i] == 45 { i += 1 }
            default:
                return false
            }
            guard run() else { return false }
        }
        return true
    }

    /// `[\w][\w.-]{0,127}` (lowercase only).
    static func isTag(_ s: Substring) -> Bool {
        let b = Array(s.utf8)
        guard (1...128).contains(b.count), isAlnum(b[0]) || b[0] == 95 else { return false }
        return b.allSatisfy { isAlnum($0) || $0 == 95 || $0 == 46 || $0 == 45 }
    }

    /// `host[:port]`, the host as dot-separated labels of letters, digits and inner hyphens.
    static func isDomain(_ s: Substring) -> Bool {
        let parts = s.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        if parts.count == 2 {
            guard let port = Int(parts[1]), (1...65535).contains(port), parts[1].utf8.allSatisfy({ (48...57).contains($0) }) else { return false }
        }
        let labels = parts[0].split(separator: ".", omittingEmptySubsequences: false)
        return !labels.isEmpty
            && labels.allSatisfy { l in
                let b = Array(l.utf8)
                return !b.isEmpty && b.count <= 63 && isAlnum(b.first!) && isAlnum(b.last!) && b.allSatisfy { isAlnum($0) || $0 == 45 }
            }
    }
}

extension ImageReference {
    /// The rule for catalog names, as errors state it.
    public static let catalogRule = "catalog names are NAME:TAG without a registry or digest, e.g. busybox:1.36 or team/trainer:v2 (the tag defaults to latest)"

    /// Parses a name of the image catalog: a reference with no registry and no digest. Returns it with its tag filled in.
    public static func parseCatalogName(_ text: String, field: String) throws(CanopyError) -> ImageReference {
        var r = try parse(text, field: field)
        if let domain = r.domain {
            throw CanopyError.invalid(
                field,
                "\"\(text)\" names a registry (\(domain)); \(catalogRule). Pull it into the catalog with canopy images pull \(text) --name \(r.path):\(r.effectiveTag)"
            )
        }
        if r.digest != nil { throw CanopyError.invalid(field, "\"\(text)\" has a digest; \(catalogRule)") }
        r.tag = r.effectiveTag
        return r
    }

    /// The registry's canonical name: `docker.io` for none and for Docker Hub's aliases.
    public var registry: String { Self.canonicalRegistry(domain) }

    /// A registry host's canonical name: `docker.io` for none and for Docker Hub's aliases.
    public static func canonicalRegistry(_ domain: String?) -> String {
        guard let domain = domain?.lowercased() else { return "docker.io" }
        return ["index.docker.io", "registry-1.docker.io"].contains(domain) ? "docker.io" : domain
    }

    /// The normalized catalog name of a catalog reference: `path:tag`.
    public var catalogName: String { "\(path):\(effectiveTag)" }

    /// The catalog name a pulled reference gets when none is given: its path and tag without the registry (and
    /// without Docker Hub's `library/`); nil when it has a digest and no tag (a name must then be given).
    public var defaultCatalogName: String? {
        if digest != nil && tag == nil { return nil }
        var p = path
        if registry == "docker.io", p.hasPrefix("library/") {
            p.removeFirst("library/".count)
        }
        return "\(p):\(effectiveTag)"
    }
}
