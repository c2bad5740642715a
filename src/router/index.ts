export {
  RULE_PROTOCOLS,
  Router,
  type PortSpec,
  type RouteDecision,
  type RouteRule,
  type RouterOptions,
  type RuleProtocol,
} from './router.js';
