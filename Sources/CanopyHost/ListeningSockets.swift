import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The TCP sockets listening in the server's network namespace, as `/proc/net/tcp` and `/proc/net/tcp6` list
/// them, with the uid that owns each: how the process runtime tells a task's own listener from one another user
/// put on the same port.
public enum ListeningSockets {
    /// One listening socket.
    public struct Listener: Sendable, Hashable {
        /// The address it is bound to, numeric (`0.0.0.0`, `127.0.0.1`, `::`).
        public var address: String
        /// Its port.
        public var port: Int
        /// The uid that owns it.
        public var uid: UInt32
        /// Its inode (`socket:[N]` in a holder's `/proc/PID/fd`).
        public var inode: UInt64

        /// Creates one.
        public init(address: String, port: Int, uid: UInt32, inode: UInt64 = 0) {
            self.address = address
            self.port = port
            self.uid = uid
            self.inode = inode
        }

        /// Whether it listens on loopback (or on every address, loopback included): the only listeners Canopy
        /// connects to. A task may bind an address that is not this machine's (IP_FREEBIND), and a connection from
        /// the server to it would leave the host.
        public var isLocal: Bool {
            address == "0.0.0.0" || address == "::" || address == "::1" || address.hasPrefix("127.") || address.hasPrefix("::ffff:127.")
        }

        /// Where to connect to reach it from this machine: loopback for a wildcard bind, else its own address.
        public var connectAddress: String {
            switch address {
            case "0.0.0.0": "127.0.0.1"
            case "::": "::1"
            default: address
            }
        }
    }

    /// A table of /proc/net, read with a buffer of 4 MiB per call: the kernel fills one call's buffer in a single pass
    /// over its sockets, while a page-sized read restarts from an offset at each call, and sockets that come and go
    /// in between (a busy machine's short connections) can make a listener fall through the gap, again and again.
    static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// The listener on `port`, on loopback or every address, that belongs to `owner` (and, with `held`, is open in one
    /// of that user's processes: a socket made by an earlier task under the same uid and handed to another process
    /// keeps that uid, but no process of the task holds it); and whether anything listens there locally at all.
    /// /proc/net/tcp is read a page at a time, and sockets that come and go meanwhile can hide others from one
    /// reading: a miss is read again, twice, before it is believed. Blocking: call it off the cooperative pool.
    public static func owned(port: Int, by owner: UInt32, held: Bool) -> (listening: Bool, own: Listener?) {
        var listeners: [Listener] = []
        var own: Listener?
        for attempt in 0..<3 where own == nil {
            if attempt > 0 { usleep(30_000) }
            listeners = on(port: port).filter(\.isLocal)
            let inodes = held && listeners.contains { $0.uid == owner } ? socketInodes(ofUser: owner) : nil
            own = listeners.first { $0.uid == owner && (inodes?.contains($0.inode) ?? !held) }
        }
        return (!listeners.isEmpty, own)
    }

    /// The listeners on `port`, from both tables.
    public static func on(port: Int, procNet: String = "/proc/net") -> [Listener] {
        var found: [Listener] = []
        for (file, v6) in [("tcp", false), ("tcp6", true)] {
            guard let text = read("\(procNet)/\(file)") else { continue }
            found += parse(text, v6: v6).filter { $0.port == port }
        }
        return found
    }

    /// Whether any TCP or UDP socket, in any state, still belongs to `uid` (one a task passed to another process
    /// before it ended keeps its uid): such a uid is not handed to a new task.
    public static func uidOwnsSockets(_ uid: UInt32, procNet: String = "/proc/net") -> Bool {
        socketOwners(procNet: procNet).contains(uid)
    }

    /// The uids that own a TCP or UDP socket, in any state.
    public static func socketOwners(procNet: String = "/proc/net") -> Set<UInt32> {
        var owners = Set<UInt32>()
        for file in ["tcp", "tcp6", "udp", "udp6"] {
            guard let text = read("\(procNet)/\(file)") else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                if f.count >= 8, let uid = UInt32(f[7]) { owners.insert(uid) }
            }
        }
        return owners
    }

    /// The socket inodes open in the processes of `uid` (their `/proc/PID/fd` links `socket:[N]`).
    public static func socketInodes(ofUser uid: UInt32) -> Set<UInt64> {
        var found = Set<UInt64>()
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where entry.first?.isNumber == true {
            var st = stat()
            guard stat("/proc/\(entry)", &st) == 0, st.st_uid == uid else { continue }
            for fd in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(entry)/fd")) ?? [] {
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(entry)/fd/\(fd)"),
                    target.hasPrefix("socket:["), target.hasSuffix("]"), let inode = UInt64(target.dropFirst(8).dropLast())
                else { continue }
                found.insert(inode)
            }
        }
        return found
    }

    /// Parses one table; rows that are not listening sockets, or do not parse, are skipped.
    public static func parse(_ text: String, v6: Bool) -> [Listener] {
        text.split(separator: "\n").dropFirst().compactMap { line in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 8, f[3] == "0A", let uid = UInt32(f[7]) else { return nil }
            let local = f[1].split(separator: ":")
            guard local.count == 2, let port = Int(local[1], radix: 16), let address = decode(String(local[0]), v6: v6) else { return nil }
            return Listener(address: address, port: port, uid: uid, inode: f.count > 9 ? UInt64(f[9]) ?? 0 : 0)
        }
    }

    /// The kernel prints addresses as 32-bit words in host (little-endian) order.
    static func decode(_ hex: String, v6: Bool) -> String? {
        let words = v6 ? 4 : 1
        guard hex.utf8.count == words * 8 else { return nil }
        var bytes: [UInt8] = []
        var i = hex.startIndex
        for _ in 0..<words {
            let end = hex.index(i, offsetBy: 8)
            guard let word = UInt32(hex[i..<end], radix: 16) else { return nil }
            let le = word.littleEndian
            bytes += [UInt8(le & 0xff), UInt8((le >> 8) & 0xff), UInt8((le >> 16) & 0xff), UInt8(le >> 24)]
            i = end
        }
        var out = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let ok = bytes.withUnsafeBytes { raw in inet_ntop(v6 ? AF_INET6 : AF_INET, raw.baseAddress, &out, socklen_t(out.count)) != nil }
        guard ok else { return nil }
        return String(cString: out)
    }
}
