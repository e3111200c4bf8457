// See README.md: only the names ProcessGroupGloo.hpp mentions.
#pragma once
