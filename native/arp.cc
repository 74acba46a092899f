// Announcing a DVIPA's new link-layer owner: after a takeover the new routing node must move
// every neighbour's cache entry for the DVIPA to its own MAC at once, or clients keep sending
// to the failed node until their entries go stale (many seconds).
// - IPv4: gratuitous ARP, an ARP request with sender = target = the address, broadcast, which
//   Linux and most routers accept as an update.
// - IPv6: an unsolicited Neighbour Advertisement (RFC 4861 7.2.6) to all-nodes, with the
//   Override flag, so that neighbours replace the cached link-layer address of the target.
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/icmp6.h>
#include <netinet/ip6.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "errors.h"
#include "exports.h"
#include "fd.h"

namespace dvipa {
namespace {

struct __attribute__((packed)) ArpIpv4 {
  uint16_t htype, ptype;
  uint8_t hlen, plen;
  uint16_t oper;
  uint8_t sha[6];
  uint32_t spa;
  uint8_t tha[6];
  uint32_t tpa;
};

// An unsolicited NA: IPv6 header, the advertisement, and the target link-layer address option.
struct __attribute__((packed)) UnsolicitedNa {
  struct ip6_hdr ip6;
  struct nd_neighbor_advert na;
  uint8_t opt_type, opt_len;
  uint8_t lladdr[6];
};

// An AF_PACKET socket for `proto` and the interface it sends on: its index and MAC.
struct Link {
  Fd sock;
  int ifindex;
  uint8_t mac[6];
};

void OpenLink(const Napi::Env &env, const std::string &ifname, uint16_t proto, Link &l) {
  l.sock.reset(socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(proto)));
  if (l.sock.fd() < 0) ThrowErrno(env, "socket(AF_PACKET)", errno);
  struct ifreq ifr {};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  if (ioctl(l.sock.fd(), SIOCGIFINDEX, &ifr) < 0) ThrowErrno(env, "ioctl(SIOCGIFINDEX)", errno, ifname);
  l.ifindex = ifr.ifr_ifindex;
  if (ioctl(l.sock.fd(), SIOCGIFHWADDR, &ifr) < 0) ThrowErrno(env, "ioctl(SIOCGIFHWADDR)", errno, ifname);
  std::memcpy(l.mac, ifr.ifr_hwaddr.sa_data, 6);
}

void SendTo(const Napi::Env &env, const Link &l, uint16_t proto, const uint8_t dst[6], const void *frame, size_t len,
            const char *what, const std::string &ifname) {
  struct sockaddr_ll to {};
  to.sll_family = AF_PACKET;
  to.sll_protocol = htons(proto);
  to.sll_ifindex = l.ifindex;
  to.sll_halen = 6;
  std::memcpy(to.sll_addr, dst, 6);
  if (sendto(l.sock.fd(), frame, len, 0, reinterpret_cast<const struct sockaddr *>(&to), sizeof(to)) < 0)
    ThrowErrno(env, what, errno, ifname);
}

// gratuitousArp(ifname, address as network-order uint32)
Napi::Value GratuitousArp(const Napi::CallbackInfo &info) {
  std::string ifname = StringArg(info, 0, "interface name");
  uint32_t addr = htonl(U32Arg(info, 1, "IPv4 address"));
  Link l{};
  OpenLink(info.Env(), ifname, ETH_P_ARP, l);
  ArpIpv4 arp{};
  arp.htype = htons(ARPHRD_ETHER);
  arp.ptype = htons(ETH_P_IP);
  arp.hlen = 6;
  arp.plen = 4;
  arp.oper = htons(ARPOP_REQUEST);
  std::memcpy(arp.sha, l.mac, 6);
  arp.spa = addr;
  arp.tpa = addr;
  static const uint8_t kBroadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  SendTo(info.Env(), l, ETH_P_ARP, kBroadcast, &arp, sizeof(arp), "sendto(ARP)", ifname);
  return info.Env().Undefined();
}

// The ICMPv6 checksum: the pseudo-header (addresses, length, next header) and the message.
uint16_t Icmp6Checksum(const struct ip6_hdr &ip6, const uint8_t *msg, size_t len) {
  uint32_t sum = 0;
  auto add = [&sum](const uint8_t *p, size_t n) {
    for (size_t i = 0; i + 1 < n; i += 2) sum += (p[i] << 8) | p[i + 1];
    if (n & 1) sum += p[n - 1] << 8;
  };
  add(ip6.ip6_src.s6_addr, 16);
  add(ip6.ip6_dst.s6_addr, 16);
  sum += static_cast<uint32_t>(len) + IPPROTO_ICMPV6;
  add(msg, len);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons(static_cast<uint16_t>(~sum));
}

// unsolicitedNa(ifname, address: 16 bytes): from the address itself to ff02::1, hop limit 255
// (RFC 4861: receivers drop NDP with any other), Override set, Solicited and Router clear.
Napi::Value UnsolicitedNeighbourAdvert(const Napi::CallbackInfo &info) {
  std::string ifname = StringArg(info, 0, "interface name");
  Napi::Buffer<uint8_t> addr = BufferArg(info, 1, "IPv6 address");
  if (addr.Length() != 16) ThrowErrno(info.Env(), "unsolicitedNa", EINVAL, "an IPv6 address is 16 bytes");
  Link l{};
  OpenLink(info.Env(), ifname, ETH_P_IPV6, l);
  UnsolicitedNa f{};
  const size_t icmp_len = sizeof(f) - sizeof(f.ip6);
  f.ip6.ip6_flow = htonl(6u << 28);
  f.ip6.ip6_plen = htons(static_cast<uint16_t>(icmp_len));
  f.ip6.ip6_nxt = IPPROTO_ICMPV6;
  f.ip6.ip6_hlim = 255;
  std::memcpy(f.ip6.ip6_src.s6_addr, addr.Data(), 16);
  f.ip6.ip6_dst.s6_addr[0] = 0xff;
  f.ip6.ip6_dst.s6_addr[1] = 0x02;
  f.ip6.ip6_dst.s6_addr[15] = 0x01;
  f.na.nd_na_type = ND_NEIGHBOR_ADVERT;
  f.na.nd_na_code = 0;
  f.na.nd_na_flags_reserved = ND_NA_FLAG_OVERRIDE;
  std::memcpy(f.na.nd_na_target.s6_addr, addr.Data(), 16);
  f.opt_type = ND_OPT_TARGET_LINKADDR;
  f.opt_len = 1;  // in units of 8 bytes
  std::memcpy(f.lladdr, l.mac, 6);
  f.na.nd_na_cksum = Icmp6Checksum(f.ip6, reinterpret_cast<const uint8_t *>(&f.na), icmp_len);
  // ff02::1 on Ethernet: 33:33 and the group's low 32 bits (RFC 2464).
  static const uint8_t kAllNodes[6] = {0x33, 0x33, 0x00, 0x00, 0x00, 0x01};
  SendTo(info.Env(), l, ETH_P_IPV6, kAllNodes, &f, sizeof(f), "sendto(NA)", ifname);
  return info.Env().Undefined();
}

}  // namespace

void InitArp(Napi::Env env, Napi::Object exports) {
  exports.Set("gratuitousArp", Napi::Function::New(env, GratuitousArp));
  exports.Set("unsolicitedNa", Napi::Function::New(env, UnsolicitedNeighbourAdvert));
}

}  // namespace dvipa
