/// Where a mount's files come from.
public enum MountSource: Sendable, Hashable, CustomStringConvertible {
    /// A path of the workload's tenant's data store, normalized (`data:/datasets/mnist`).
    case data(String)
    /// A path of the host, normalized, that an admin allowed (`host:/scratch`).
    case host(String)

    /// The form specs carry: `data:/PATH` or `host:/PATH`.
    public var description: String {
        switch self {
        case .data(let p): "data:\(p)"
        case .host(let p): "host:\(p)"
        }
    }
}

/// The rules mounts follow, as pure functions: which sources and targets are acceptable. The data store's contents
/// and the admin's allow-list are the caller's to pass.
public enum MountRules {
    /// The most mounts one workload may ask for.
    public static let maxMounts = 32
    /// Where a task's own directory appears in its container: a mount may go below it, not over it.
    public static let workspace = "/workspace"
    /// Paths a mount may not cover, nor go below: the container's system directories. A first component starting
    /// with `lib` (`/lib`, `/lib64`, `/libx32`) counts as one of them.
    public static let systemPaths = ["/proc", "/sys", "/dev", "/etc", "/bin", "/sbin", "/usr", "/boot", "/run", "/var/run"]

    /// Reads a source: `data:/PATH` or `host:/PATH`, the path normalized; a problem, for people, otherwise.
    public static func source(_ raw: String) -> Result<MountSource, MountProblem> {
        let scheme: String
        let rest: Substring
        if raw.hasPrefix("data:") {
            (scheme, rest) = ("data", raw.dropFirst(5))
        } else if raw.hasPrefix("host:") {
            (scheme, rest) = ("host", raw.dropFirst(5))
        } else {
            return .failure(MountProblem("a source is data:/PATH (your data store) or host:/PATH (a host path an admin allowed), got \"\(shown(raw))\""))
        }
        guard rest.hasPrefix("/") else { return .failure(MountProblem("\(scheme): takes an absolute path, as \(scheme):/datasets/mnist")) }
        guard !rest.split(separator: "/").contains(".."), let path = DataPath.normalize(String(rest)) else {
            return .failure(MountProblem("\"\(shown(raw))\" is not a valid path (\(DataPath.rule))"))
        }
        return .success(scheme == "data" ? .data(path) : .host(path))
    }

    /// Reads a target: absolute, normalized, not `/`, not the workspace itself, not over or below a system path.
    public static func target(_ raw: String) -> Result<String, MountProblem> {
        guard raw.hasPrefix("/") else { return .failure(MountProblem("a target is an absolute path in the container, as /data; got \"\(shown(raw))\"")) }
        guard !raw.split(separator: "/").contains(".."), let path = DataPath.normalize(raw) else {
            return .failure(MountProblem("\"\(shown(raw))\" is not a valid path (\(DataPath.rule))"))
        }
        if path == "/" { return .failure(MountProblem("a mount cannot cover the container's root")) }
        if path == workspace { return .failure(MountProblem("\(workspace) is the task's own directory; mount below it (\(workspace)/data) or elsewhere")) }
        let first = path.split(separator: "/").first.map(String.init) ?? ""
        if first.hasPrefix("lib") || systemPaths.contains(where: { isSameOrBelow(path, $0) }) {
            return .failure(
                MountProblem("\(path) is a system directory of the container (\(systemPaths.joined(separator: ", ")), /lib*); mount elsewhere, as /data"))
        }
        return .success(path)
    }

    /// Whether `path` is `base` or below it, component by component (`/data2` is not below `/data`). Both normalized.
    public static func isSameOrBelow(_ path: String, _ base: String) -> Bool {
        let p = path.split(separator: "/")
        let b = base.split(separator: "/")
        return p.count >= b.count && Array(p.prefix(b.count)) == b
    }

    /// Whether a normalized host path is inside one of the allowed paths (each normalized first; entries that are
    /// not absolute paths allow nothing).
    public static func isAllowed(host path: String, by allowList: [String]) -> Bool {
        allowList.contains { entry in
            guard entry.hasPrefix("/"), !entry.split(separator: "/").contains(".."), let base = DataPath.normalize(entry) else { return false }
            return isSameOrBelow(path, base)
        }
    }

    static func shown(_ s: String) -> String {
        let clean = s.unicodeScalars.map { $0.value < 32 || $0.value == 127 ? "?" : String($0) }.joined()
        return clean.count > 80 ? String(clean.prefix(60)) + "..." : clean
    }
}

/// Why a mount's source or target is refused.
public struct MountProblem: Error, Sendable, Equatable {
    /// The reason, for people.
    public var message: String
    /// Creates a problem.
    public init(_ message: String) { self.message = message }
}
