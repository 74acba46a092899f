// Gratuitous ARP: after a takeover the new routing node must move every neighbour's cache
// entry for the DVIPA to its own MAC at once, or clients keep sending to the failed node
// until their entries go stale (many seconds). An ARP request with sender = target = the
// address, broadcast, is what Linux and most routers accept as an update.
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
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

// gratuitousArp(ifname, address as network-order uint32)
Napi::Value GratuitousArp(const Napi::CallbackInfo &info) {
  std::string ifname = StringArg(info, 0, "interface name");
  uint32_t addr = htonl(U32Arg(info, 1, "IPv4 address"));
  Fd s(socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ARP)));
  if (s.fd() < 0) ThrowErrno(info.Env(), "socket(AF_PACKET)", errno);
  struct ifreq ifr {};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  if (ioctl(s.fd(), SIOCGIFINDEX, &ifr) < 0) ThrowErrno(info.Env(), "ioctl(SIOCGIFINDEX)", errno, ifname);
  int ifindex = ifr.ifr_ifindex;
  if (ioctl(s.fd(), SIOCGIFHWADDR, &ifr) < 0) ThrowErrno(info.Env(), "ioctl(SIOCGIFHWADDR)", errno, ifname);
  ArpIpv4 arp{};
  arp.htype = htons(ARPHRD_ETHER);
  arp.ptype = htons(ETH_P_IP);
  arp.hlen = 6;
  arp.plen = 4;
  arp.oper = htons(ARPOP_REQUEST);
  std::memcpy(arp.sha, ifr.ifr_hwaddr.sa_data, 6);
  arp.spa = addr;
  arp.tpa = addr;
  struct sockaddr_ll to {};
  to.sll_family = AF_PACKET;
  to.sll_protocol = htons(ETH_P_ARP);
  to.sll_ifindex = ifindex;
  to.sll_halen = 6;
  std::memset(to.sll_addr, 0xff, 6);
  if (sendto(s.fd(), &arp, sizeof(arp), 0, reinterpret_cast<struct sockaddr *>(&to), sizeof(to)) < 0)
    ThrowErrno(info.Env(), "sendto(ARP)", errno, ifname);
  return info.Env().Undefined();
}

}  // namespace

void InitArp(Napi::Env env, Napi::Object exports) {
  exports.Set("gratuitousArp", Napi::Function::New(env, GratuitousArp));
}

}  // namespace dvipa
