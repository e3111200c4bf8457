// See README.md: only the names ProcessGroupGloo.hpp mentions.
#pragma once
namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
} // namespace transport
} // namespace gloo
