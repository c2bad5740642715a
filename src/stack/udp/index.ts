/** UDP: the flow table and the glue between packets and flows. */
export {
  UDP_FLOW_DEFAULTS,
  UDP_QUOTE_MAX,
  UdpFlow,
  UdpFlowTable,
  udpFlowKey,
  type UdpCloseReason,
  type UdpFlowListener,
  type UdpFlowTableOptions,
  type UdpFlowTableStats,
} from './flow-table.js';
export { UDP_MAX_PAYLOAD, UdpStack, type UdpFlowHandler, type UdpStackOptions, type UdpStackStats } from './udp-stack.js';
